-- The database and role of a Magpie cluster. Run once as a superuser:
--   psql -v password="'a long random secret'" -f postgres.sql
-- The nodes create and migrate the schema themselves.
CREATE ROLE magpie LOGIN PASSWORD :password;
CREATE DATABASE magpie OWNER magpie;
