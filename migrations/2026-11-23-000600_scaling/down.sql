DROP TABLE instance_scaling;
