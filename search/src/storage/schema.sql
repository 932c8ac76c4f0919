-- Optuna's RDB schema for PostgreSQL at alembic revision v3.2.0.a (schema
-- version 12; Optuna 3.2 to 5.0), as Optuna's SQLAlchemy models create it
-- (checked against `pg_dump --schema-only` of a database Optuna 5.0.0 set up).
CREATE TYPE studydirection AS ENUM ('NOT_SET', 'MINIMIZE', 'MAXIMIZE');
CREATE TYPE trialintermediatevaluetype AS ENUM ('FINITE', 'INF_POS', 'INF_NEG', 'NAN');
CREATE TYPE trialstate AS ENUM ('RUNNING', 'COMPLETE', 'PRUNED', 'FAIL', 'WAITING');
CREATE TYPE trialvaluetype AS ENUM ('FINITE', 'INF_POS', 'INF_NEG');

CREATE TABLE alembic_version (
    version_num character varying(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
CREATE TABLE version_info (
    version_info_id integer NOT NULL PRIMARY KEY,
    schema_version integer,
    library_version character varying(256),
    CONSTRAINT version_info_version_info_id_check CHECK (version_info_id = 1)
);
CREATE TABLE studies (
    study_id serial PRIMARY KEY,
    study_name character varying(512) NOT NULL
);
CREATE UNIQUE INDEX ix_studies_study_name ON studies USING btree (study_name);
CREATE TABLE study_directions (
    study_direction_id serial PRIMARY KEY,
    direction studydirection NOT NULL,
    study_id integer NOT NULL REFERENCES studies (study_id),
    objective integer NOT NULL,
    UNIQUE (study_id, objective)
);
CREATE TABLE study_user_attributes (
    study_user_attribute_id serial PRIMARY KEY,
    study_id integer REFERENCES studies (study_id),
    key character varying(512),
    value_json text,
    UNIQUE (study_id, key)
);
CREATE TABLE study_system_attributes (
    study_system_attribute_id serial PRIMARY KEY,
    study_id integer REFERENCES studies (study_id),
    key character varying(512),
    value_json text,
    UNIQUE (study_id, key)
);
CREATE TABLE trials (
    trial_id serial PRIMARY KEY,
    number integer,
    study_id integer REFERENCES studies (study_id),
    state trialstate NOT NULL,
    datetime_start timestamp without time zone,
    datetime_complete timestamp without time zone
);
CREATE INDEX ix_trials_study_id ON trials USING btree (study_id);
CREATE TABLE trial_user_attributes (
    trial_user_attribute_id serial PRIMARY KEY,
    trial_id integer REFERENCES trials (trial_id),
    key character varying(512),
    value_json text,
    UNIQUE (trial_id, key)
);
CREATE TABLE trial_system_attributes (
    trial_system_attribute_id serial PRIMARY KEY,
    trial_id integer REFERENCES trials (trial_id),
    key character varying(512),
    value_json text,
    UNIQUE (trial_id, key)
);
CREATE TABLE trial_params (
    param_id serial PRIMARY KEY,
    trial_id integer REFERENCES trials (trial_id),
    param_name character varying(512),
    param_value double precision,
    distribution_json text,
    UNIQUE (trial_id, param_name)
);
CREATE TABLE trial_values (
    trial_value_id serial PRIMARY KEY,
    trial_id integer NOT NULL REFERENCES trials (trial_id),
    objective integer NOT NULL,
    value double precision,
    value_type trialvaluetype NOT NULL,
    UNIQUE (trial_id, objective)
);
CREATE TABLE trial_intermediate_values (
    trial_intermediate_value_id serial PRIMARY KEY,
    trial_id integer NOT NULL REFERENCES trials (trial_id),
    step integer NOT NULL,
    intermediate_value double precision,
    intermediate_value_type trialintermediatevaluetype NOT NULL,
    UNIQUE (trial_id, step)
);
CREATE TABLE trial_heartbeats (
    trial_heartbeat_id serial PRIMARY KEY,
    trial_id integer NOT NULL UNIQUE REFERENCES trials (trial_id),
    heartbeat timestamp without time zone NOT NULL
);
