DROP TABLE fleet_upgrade_members;
DROP TABLE fleet_upgrades;
