-- memsy's onboarding records and console reads (engram/onboarding.py, engram/console.py).
-- An org's customization — what matters to it (`focus`) and the promotion prompt that steers
-- the llm extractor — lives on its row; its roles and teams share one table, told apart by
-- `kind`. Migration 0010 is another branch's (groups); the numbers only order the files.
ALTER TABLE orgs ADD COLUMN focus TEXT;
ALTER TABLE orgs ADD COLUMN promotion_prompt TEXT;
ALTER TABLE orgs ADD COLUMN prompt_meta TEXT;
ALTER TABLE orgs ADD COLUMN updated_at TEXT;
CREATE TABLE IF NOT EXISTS org_units (
    org_id TEXT NOT NULL,
    kind TEXT NOT NULL,                         -- role | team
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    focus TEXT NOT NULL,
    promotion_prompt TEXT NOT NULL,
    prompt_meta TEXT NOT NULL,                  -- JSON: how the prompt was made
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org_id, kind, id)
);
CREATE INDEX IF NOT EXISTS org_units_listed ON org_units(org_id, kind, created_at, id);
-- The console's event browser pages an org's events by when they happened.
CREATE INDEX IF NOT EXISTS events_console ON events(org_id, occurred_at, id);
