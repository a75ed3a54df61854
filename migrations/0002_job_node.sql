-- The node that numbers a job's events: this server for its own jobs, another
-- node for jobs mirrored from it through Redis. Only a job's own node marks it
-- failed when it finds it unfinished at start-up.
ALTER TABLE jobs ADD COLUMN node TEXT NOT NULL DEFAULT '';
