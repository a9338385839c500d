-- The tutorial's rule in SQL, the same as transform.py: "Doe" in name becomes "Das".
-- Only the SELECT list, over the source's columns (the source is aliased s). Keep the key column
-- unchanged; the job adds run_id and processed_at. Used when transform_sql is set to transform.sql.
* REPLACE (REPLACE(name, 'Doe', 'Das') AS name)
