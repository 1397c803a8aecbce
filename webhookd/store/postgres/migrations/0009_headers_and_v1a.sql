-- webhookd schema v9 (PostgreSQL): custom headers per subscription, and Ed25519 (v1a) signatures.
-- headers is the AES-GCM ciphertext of a JSON object (values may be credentials); a v1a subscription
-- keeps its encrypted whsk_ key in secret, like a v1 whsec_ secret, and its public key in public_key.
ALTER TABLE subscriptions ADD COLUMN headers bytea;
ALTER TABLE subscriptions ADD COLUMN signature_scheme text NOT NULL DEFAULT 'v1'
    CHECK (signature_scheme IN ('v1', 'v1a'));
ALTER TABLE subscriptions ADD COLUMN public_key text;
