-- Merchants, their Shopify shops and Facebook pages, with OAuth tokens encrypted at rest
-- (AES-256-GCM, see src/crypto.rs). Times are unix seconds.

CREATE TABLE merchants (
    uuid        TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);

CREATE TABLE shops (
    domain                    TEXT PRIMARY KEY,
    merchant_uuid             TEXT NOT NULL REFERENCES merchants(uuid),
    access_token              BLOB,            -- NULL once uninstalled
    scopes                    TEXT NOT NULL DEFAULT '',
    token_expires_at          INTEGER,         -- NULL: non-expiring offline token
    refresh_token             BLOB,
    refresh_token_expires_at  INTEGER,
    status                    TEXT NOT NULL DEFAULT 'active'
                              CHECK (status IN ('active', 'uninstalled', 'needs_reauth')),
    status_reason             TEXT,
    installed_at              INTEGER NOT NULL,
    uninstalled_at            INTEGER,
    updated_at                INTEGER NOT NULL
);
CREATE INDEX shops_by_merchant ON shops(merchant_uuid);

-- One Facebook user token per merchant (the seeds kept one global token for everyone).
CREATE TABLE facebook_users (
    merchant_uuid  TEXT PRIMARY KEY REFERENCES merchants(uuid),
    fb_user_id     TEXT,
    access_token   BLOB NOT NULL,
    expires_at     INTEGER,
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth')),
    status_reason  TEXT,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX facebook_users_by_fb_id ON facebook_users(fb_user_id);

CREATE TABLE pages (
    page_id        TEXT PRIMARY KEY,
    merchant_uuid  TEXT NOT NULL REFERENCES merchants(uuid),
    name           TEXT,
    access_token   BLOB NOT NULL,
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth')),
    status_reason  TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX pages_by_merchant ON pages(merchant_uuid);
