//! Accounts and their API tokens.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::DbError;
use crate::schema::{accounts, api_tokens};
use crate::sealing::hex;

/// What an account may do: customers act on their own objects, operators on all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
        }
    }

    fn parse(stored: &str) -> Result<Role, DbError> {
        match stored {
            "customer" => Ok(Role::Customer),
            "operator" => Ok(Role::Operator),
            other => Err(DbError::Corrupt {
                what: "account role",
                message: other.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
}

/// Who is asking: every query of tenant data is scoped by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub account_id: Uuid,
    pub role: Role,
}

impl Principal {
    /// The owner a query must match, or `None` when the principal sees everything.
    pub fn owner_filter(&self) -> Option<Uuid> {
        match self.role {
            Role::Operator => None,
            Role::Customer => Some(self.account_id),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = accounts)]
struct AccountRow {
    id: Uuid,
    email: String,
    role: String,
}

impl TryFrom<AccountRow> for Account {
    type Error = DbError;

    fn try_from(row: AccountRow) -> Result<Self, DbError> {
        Ok(Account {
            id: row.id,
            email: row.email,
            role: Role::parse(&row.role)?,
        })
    }
}

/// The account with this e-mail, created when missing. An existing account
/// keeps its role: asking for another one is an error, never a silent promotion.
pub async fn ensure_account(
    conn: &mut AsyncPgConnection,
    email: &str,
    role: Role,
) -> Result<Account, DbError> {
    let email = email.trim().to_lowercase();
    diesel::insert_into(accounts::table)
        .values((
            accounts::id.eq(Uuid::now_v7()),
            accounts::email.eq(&email),
            accounts::role.eq(role.as_str()),
        ))
        .on_conflict(accounts::email)
        .do_nothing()
        .execute(conn)
        .await?;
    let account: Account = accounts::table
        .filter(accounts::email.eq(&email))
        .select(AccountRow::as_select())
        .get_result(conn)
        .await?
        .try_into()?;
    if account.role != role {
        return Err(DbError::RoleMismatch {
            email,
            existing: account.role.as_str().to_owned(),
        });
    }
    Ok(account)
}

pub async fn find_account(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<Account>, DbError> {
    let row = accounts::table
        .find(id)
        .select(AccountRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Account::try_from).transpose()
}

/// A token as handed to its owner, once. Only its hash is stored.
pub struct IssuedToken {
    pub id: Uuid,
    pub secret: String,
}

const TOKEN_PREFIX: &str = "herd_";

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub async fn issue_token(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
    name: &str,
) -> Result<IssuedToken, DbError> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|_| crate::SealingError::Random)?;
    let secret = format!("{TOKEN_PREFIX}{}", hex(&random));
    let id = Uuid::now_v7();
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::id.eq(id),
            api_tokens::account_id.eq(account_id),
            api_tokens::token_sha256.eq(digest(&secret)),
            api_tokens::display_prefix.eq(&secret[..TOKEN_PREFIX.len() + 6]),
            api_tokens::name.eq(name),
        ))
        .execute(conn)
        .await?;
    Ok(IssuedToken { id, secret })
}

/// The principal a bearer token stands for, if the token is live.
pub async fn authenticate(
    conn: &mut AsyncPgConnection,
    token: &str,
) -> Result<Option<Principal>, DbError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let now: DateTime<Utc> = Utc::now();
    let found: Option<(Uuid, String)> = api_tokens::table
        .inner_join(accounts::table)
        .filter(api_tokens::token_sha256.eq(digest(token)))
        .filter(api_tokens::revoked_at.is_null())
        .filter(
            api_tokens::expires_at
                .is_null()
                .or(api_tokens::expires_at.gt(now)),
        )
        .select((accounts::id, accounts::role))
        .first(conn)
        .await
        .optional()?;
    found
        .map(|(account_id, role)| {
            Ok(Principal {
                account_id,
                role: Role::parse(&role)?,
            })
        })
        .transpose()
}
