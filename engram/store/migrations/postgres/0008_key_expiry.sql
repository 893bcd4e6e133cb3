-- A key may expire (the admin API, engram/admin.py): past `expires_at` it authenticates no one.
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
