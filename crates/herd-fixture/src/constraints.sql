-- Mastodon's indexes and foreign keys (names as its migrations give them).

CREATE UNIQUE INDEX index_accounts_on_username_and_domain_lower ON accounts USING btree (lower((username)::text), COALESCE(lower((domain)::text), ''::text));
CREATE INDEX index_accounts_on_uri ON accounts USING btree (uri);
CREATE INDEX index_accounts_on_url ON accounts USING btree (url text_pattern_ops) WHERE (url IS NOT NULL);
CREATE INDEX index_accounts_on_moved_to_account_id ON accounts USING btree (moved_to_account_id) WHERE (moved_to_account_id IS NOT NULL);
CREATE INDEX index_accounts_on_domain_and_id ON accounts USING btree (domain, id);

CREATE UNIQUE INDEX index_oauth_applications_on_uid ON oauth_applications USING btree (uid);
CREATE INDEX index_oauth_applications_on_owner_id_and_owner_type ON oauth_applications USING btree (owner_id, owner_type);

CREATE UNIQUE INDEX index_users_on_email ON users USING btree (email);
CREATE INDEX index_users_on_account_id ON users USING btree (account_id);
CREATE UNIQUE INDEX index_users_on_confirmation_token ON users USING btree (confirmation_token);
CREATE UNIQUE INDEX index_users_on_reset_password_token ON users USING btree (reset_password_token) WHERE (reset_password_token IS NOT NULL);

CREATE UNIQUE INDEX index_oauth_access_tokens_on_token ON oauth_access_tokens USING btree (token);
CREATE UNIQUE INDEX index_oauth_access_tokens_on_refresh_token ON oauth_access_tokens USING btree (refresh_token) WHERE (refresh_token IS NOT NULL);
CREATE INDEX index_oauth_access_tokens_on_resource_owner_id ON oauth_access_tokens USING btree (resource_owner_id) WHERE (resource_owner_id IS NOT NULL);

CREATE INDEX index_statuses_20190820 ON statuses USING btree (account_id, id DESC, visibility, updated_at) WHERE (deleted_at IS NULL);
CREATE INDEX index_statuses_local_20190824 ON statuses USING btree (id DESC, account_id) WHERE ((local OR (uri IS NULL)) AND (deleted_at IS NULL) AND (visibility = 0) AND (reblog_of_id IS NULL) AND ((NOT reply) OR (in_reply_to_account_id = account_id)));
CREATE UNIQUE INDEX index_statuses_on_uri ON statuses USING btree (uri text_pattern_ops) WHERE (uri IS NOT NULL);
CREATE INDEX index_statuses_on_in_reply_to_id ON statuses USING btree (in_reply_to_id) WHERE (in_reply_to_id IS NOT NULL);
CREATE INDEX index_statuses_on_in_reply_to_account_id ON statuses USING btree (in_reply_to_account_id) WHERE (in_reply_to_account_id IS NOT NULL);
CREATE INDEX index_statuses_on_reblog_of_id_and_account_id ON statuses USING btree (reblog_of_id, account_id);
CREATE INDEX index_statuses_on_deleted_at ON statuses USING btree (deleted_at) WHERE (deleted_at IS NOT NULL);

CREATE INDEX index_media_attachments_on_account_id_and_status_id ON media_attachments USING btree (account_id, status_id DESC);
CREATE UNIQUE INDEX index_media_attachments_on_shortcode ON media_attachments USING btree (shortcode text_pattern_ops) WHERE (shortcode IS NOT NULL);
CREATE INDEX index_media_attachments_on_status_id ON media_attachments USING btree (status_id);

CREATE UNIQUE INDEX index_tags_on_name_lower_btree ON tags USING btree (lower((name)::text) text_pattern_ops);
CREATE INDEX index_statuses_tags_on_status_id ON statuses_tags USING btree (status_id);

CREATE UNIQUE INDEX index_follows_on_account_id_and_target_account_id ON follows USING btree (account_id, target_account_id);
CREATE INDEX index_follows_on_target_account_id ON follows USING btree (target_account_id);

CREATE UNIQUE INDEX index_favourites_on_account_id_and_status_id ON favourites USING btree (account_id, status_id);
CREATE INDEX index_favourites_on_account_id_and_id ON favourites USING btree (account_id, id);
CREATE INDEX index_favourites_on_status_id ON favourites USING btree (status_id);

CREATE INDEX index_notifications_on_account_id_and_id_and_type ON notifications USING btree (account_id, id DESC, type);
CREATE INDEX index_notifications_on_activity_id_and_activity_type ON notifications USING btree (activity_id, activity_type);
CREATE INDEX index_notifications_on_from_account_id ON notifications USING btree (from_account_id);

CREATE UNIQUE INDEX index_domain_blocks_on_domain ON domain_blocks USING btree (domain);
CREATE UNIQUE INDEX index_settings_on_var ON settings USING btree (var);

ALTER TABLE ONLY accounts ADD CONSTRAINT fk_rails_2320833084 FOREIGN KEY (moved_to_account_id) REFERENCES accounts(id) ON DELETE SET NULL;
ALTER TABLE ONLY users ADD CONSTRAINT fk_50500f500d FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE;
ALTER TABLE ONLY oauth_access_tokens ADD CONSTRAINT fk_f5fc4c1ee3 FOREIGN KEY (application_id) REFERENCES oauth_applications(id) ON DELETE CASCADE;
ALTER TABLE ONLY oauth_access_tokens ADD CONSTRAINT fk_e84df68546 FOREIGN KEY (resource_owner_id) REFERENCES users(id) ON DELETE CASCADE;
ALTER TABLE ONLY statuses ADD CONSTRAINT fk_9bda1543f7 FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE;
ALTER TABLE ONLY statuses ADD CONSTRAINT fk_rails_94a6f70399 FOREIGN KEY (in_reply_to_id) REFERENCES statuses(id) ON DELETE SET NULL;
ALTER TABLE ONLY statuses ADD CONSTRAINT fk_rails_256483a9ab FOREIGN KEY (reblog_of_id) REFERENCES statuses(id) ON DELETE CASCADE;
ALTER TABLE ONLY statuses ADD CONSTRAINT fk_c7fa917661 FOREIGN KEY (in_reply_to_account_id) REFERENCES accounts(id) ON DELETE SET NULL;
ALTER TABLE ONLY media_attachments ADD CONSTRAINT fk_96dd81e81b FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE SET NULL;
ALTER TABLE ONLY media_attachments ADD CONSTRAINT fk_rails_3ec0cfdd70 FOREIGN KEY (status_id) REFERENCES statuses(id) ON DELETE SET NULL;
ALTER TABLE ONLY statuses_tags ADD CONSTRAINT fk_3081861e21 FOREIGN KEY (tag_id) REFERENCES tags(id) ON DELETE CASCADE;
ALTER TABLE ONLY statuses_tags ADD CONSTRAINT fk_rails_df0fe11427 FOREIGN KEY (status_id) REFERENCES statuses(id) ON DELETE CASCADE;
ALTER TABLE ONLY follows ADD CONSTRAINT fk_32ed1b5560 FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE;
ALTER TABLE ONLY follows ADD CONSTRAINT fk_745ca29eac FOREIGN KEY (target_account_id) REFERENCES accounts(id) ON DELETE CASCADE;
ALTER TABLE ONLY favourites ADD CONSTRAINT fk_5eb6c2b4fb FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE;
ALTER TABLE ONLY favourites ADD CONSTRAINT fk_b0e856845e FOREIGN KEY (status_id) REFERENCES statuses(id) ON DELETE CASCADE;
ALTER TABLE ONLY notifications ADD CONSTRAINT fk_c141c8ee55 FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE;
ALTER TABLE ONLY notifications ADD CONSTRAINT fk_fbd6b0bf9e FOREIGN KEY (from_account_id) REFERENCES accounts(id) ON DELETE CASCADE;
