-- memsy's onboarding records and console reads (engram/onboarding.py, engram/console.py).
-- An org's customization — what matters to it (`focus`) and the promotion prompt that steers
-- the llm extractor — lives on its row; its roles and teams share one table, told apart by
-- `kind`. Migration 0010 is another branch's (groups); the numbers only order the files.
ALTER TABLE orgs ADD COLUMN focus text;
ALTER TABLE orgs ADD COLUMN promotion_prompt text;
ALTER TABLE orgs ADD COLUMN prompt_meta json;
ALTER TABLE orgs ADD COLUMN updated_at timestamptz;
CREATE TABLE org_units (
    org_id            text COLLATE "C" NOT NULL,
    kind              text COLLATE "C" NOT NULL,   -- role | team
    id                text COLLATE "C" NOT NULL,
    name              text NOT NULL,
    focus             text NOT NULL,
    promotion_prompt  text NOT NULL,
    prompt_meta       json NOT NULL,               -- how the prompt was made
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (org_id, kind, id)
);
CREATE INDEX org_units_listed ON org_units (org_id, kind, created_at, id);
-- The console's event browser pages an org's events by when they happened.
CREATE INDEX events_console ON events (org_id, occurred_at, id);
