-- The raw-SQL ceiling's queue: the least a PostgreSQL task table needs, with a partial index
-- holding only the rows waiting to be claimed (as pgq's claim index does).
CREATE TABLE bench_jobs (
    id bigserial PRIMARY KEY,
    queue text NOT NULL DEFAULT 'default',
    state text NOT NULL DEFAULT 'ready',
    args jsonb NOT NULL DEFAULT '[]',
    run_at timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX bench_jobs_ready_idx ON bench_jobs (queue, id) WHERE state = 'ready';
