BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('v2.6.0.a');
CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
);
INSERT INTO "studies" VALUES(1,'hreg');
CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_directions" VALUES(1,'MAXIMIZE',1,0);
CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_intermediate_values" VALUES(1,1,1,0.8);
INSERT INTO "trial_intermediate_values" VALUES(2,1,10,0.88);
INSERT INTO "trial_intermediate_values" VALUES(3,1,20,0.92);
INSERT INTO "trial_intermediate_values" VALUES(4,1,30,0.95);
INSERT INTO "trial_intermediate_values" VALUES(5,2,1,0.82);
INSERT INTO "trial_intermediate_values" VALUES(6,2,10,0.87);
INSERT INTO "trial_intermediate_values" VALUES(7,2,20,0.9);
INSERT INTO "trial_intermediate_values" VALUES(8,2,30,0.93);
INSERT INTO "trial_intermediate_values" VALUES(9,3,1,0.81);
INSERT INTO "trial_intermediate_values" VALUES(10,3,10,0.84);
INSERT INTO "trial_intermediate_values" VALUES(11,3,20,0.85);
INSERT INTO "trial_intermediate_values" VALUES(12,4,1,0.8);
INSERT INTO "trial_intermediate_values" VALUES(13,4,10,0.83);
INSERT INTO "trial_intermediate_values" VALUES(14,4,20,0.86);
INSERT INTO "trial_intermediate_values" VALUES(15,4,30,0.88);
CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_params" VALUES(1,1,'optimizer.lr',1.25206538149994720671e-03,'{"name": "LogUniformDistribution", "attributes": {"low": 0.0001, "high": 0.01}}');
INSERT INTO "trial_params" VALUES(2,1,'regularizer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "l1", "l2"]}}');
INSERT INTO "trial_params" VALUES(3,1,'model.dropout',2.11827399669452354213e-01,'{"name": "UniformDistribution", "attributes": {"low": 0.0, "high": 0.5}}');
INSERT INTO "trial_params" VALUES(4,2,'optimizer.lr',1.95788972012130024769e-03,'{"name": "LogUniformDistribution", "attributes": {"low": 0.0001, "high": 0.01}}');
INSERT INTO "trial_params" VALUES(5,2,'regularizer',2.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "l1", "l2"]}}');
INSERT INTO "trial_params" VALUES(6,2,'model.dropout',1.9172075941288885259e-01,'{"name": "UniformDistribution", "attributes": {"low": 0.0, "high": 0.5}}');
INSERT INTO "trial_params" VALUES(7,3,'optimizer.lr',3.83221685049278974408e-03,'{"name": "LogUniformDistribution", "attributes": {"low": 0.0001, "high": 0.01}}');
INSERT INTO "trial_params" VALUES(8,3,'regularizer',2.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "l1", "l2"]}}');
INSERT INTO "trial_params" VALUES(9,3,'model.dropout',3.55180290989434710446e-02,'{"name": "UniformDistribution", "attributes": {"low": 0.0, "high": 0.5}}');
INSERT INTO "trial_params" VALUES(10,4,'optimizer.lr',1.49368355441984612284e-04,'{"name": "LogUniformDistribution", "attributes": {"low": 0.0001, "high": 0.01}}');
INSERT INTO "trial_params" VALUES(11,4,'regularizer',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "l1", "l2"]}}');
INSERT INTO "trial_params" VALUES(12,4,'model.dropout',4.35006074123409580689e-01,'{"name": "UniformDistribution", "attributes": {"low": 0.0, "high": 0.5}}');
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_system_attributes" VALUES(1,1,'hreg:overrides','["model.dropout=0.21182739966945235", "optimizer.lr=0.0012520653814999472", "regularizer=none"]');
INSERT INTO "trial_system_attributes" VALUES(2,1,'hreg:status','"completed"');
INSERT INTO "trial_system_attributes" VALUES(3,1,'hreg:epochs','30');
INSERT INTO "trial_system_attributes" VALUES(4,1,'hreg:final','{"val_acc": 0.95, "val_loss": 0.16, "test_acc": 0.948, "test_loss": 0.17}');
INSERT INTO "trial_system_attributes" VALUES(5,1,'hreg:run_dir','"/nonexistent/run/0"');
INSERT INTO "trial_system_attributes" VALUES(6,2,'hreg:overrides','["model.dropout=0.19172075941288885", "optimizer.lr=0.0019578897201213002", "regularizer=l2"]');
INSERT INTO "trial_system_attributes" VALUES(7,2,'hreg:status','"completed"');
INSERT INTO "trial_system_attributes" VALUES(8,2,'hreg:epochs','30');
INSERT INTO "trial_system_attributes" VALUES(9,2,'hreg:final','{"val_acc": 0.93, "val_loss": 0.22, "test_acc": 0.927, "test_loss": 0.23}');
INSERT INTO "trial_system_attributes" VALUES(10,2,'hreg:run_dir','"/nonexistent/run/1"');
INSERT INTO "trial_system_attributes" VALUES(11,3,'hreg:overrides','["model.dropout=0.03551802909894347", "optimizer.lr=0.0038322168504927897", "regularizer=l2"]');
INSERT INTO "trial_system_attributes" VALUES(12,3,'hreg:status','"pruned"');
INSERT INTO "trial_system_attributes" VALUES(13,3,'hreg:epochs','20');
INSERT INTO "trial_system_attributes" VALUES(14,3,'hreg:final','{"val_acc": 0.85, "val_loss": 0.45, "test_acc": 0.846, "test_loss": 0.46}');
INSERT INTO "trial_system_attributes" VALUES(15,3,'hreg:run_dir','"/nonexistent/run/2"');
INSERT INTO "trial_system_attributes" VALUES(16,4,'hreg:overrides','["model.dropout=0.4350060741234096", "optimizer.lr=0.0001493683554419846", "regularizer=l1"]');
INSERT INTO "trial_system_attributes" VALUES(17,4,'hreg:status','"diverged"');
INSERT INTO "trial_system_attributes" VALUES(18,4,'hreg:epochs','30');
INSERT INTO "trial_system_attributes" VALUES(19,4,'hreg:final','{"val_acc": 0.88, "val_loss": 0.38, "test_acc": 0.874, "test_loss": 0.39}');
INSERT INTO "trial_system_attributes" VALUES(20,4,'hreg:run_dir','"/nonexistent/run/3"');
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_values" VALUES(1,1,0,0.95);
INSERT INTO "trial_values" VALUES(2,2,0,0.93);
INSERT INTO "trial_values" VALUES(3,3,0,0.85);
CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "trials" VALUES(1,0,1,'COMPLETE','2026-12-06 23:37:57.802315','2026-12-06 23:37:57.855052');
INSERT INTO "trials" VALUES(2,1,1,'COMPLETE','2026-12-06 23:37:57.862680','2026-12-06 23:37:57.909811');
INSERT INTO "trials" VALUES(3,2,1,'PRUNED','2026-12-06 23:37:57.915323','2026-12-06 23:37:57.954247');
INSERT INTO "trials" VALUES(4,3,1,'FAIL','2026-12-06 23:37:57.959816','2026-12-06 23:37:58.003271');
CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
);
INSERT INTO "version_info" VALUES(1,12,'2.10.1');
CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name);
COMMIT;
