DROP TABLE instance_upgrades;
