-- The Shopify catalogue store: one row per product, collection and discount with its canonical
-- JSON exactly as the objects hold it, so a change re-fetches one entity and the objects are
-- rebuilt by streaming rows. A cache of Shopify's data: a full sync rebuilds it, so it is not
-- part of the backups.

CREATE TABLE shops (
    shop            TEXT PRIMARY KEY,
    body            BLOB,                 -- canonical JSON of the shop object
    generation      INTEGER NOT NULL DEFAULT 0,  -- number of the last complete full sync
    full_synced_at  INTEGER,              -- unix s of the last complete full sync
    watermark       TEXT,                 -- newest product updatedAt seen (RFC 3339)
    bulk_operation  TEXT,                 -- a bulk operation started and not yet read
    bulk_stage      TEXT CHECK (bulk_stage IN ('products', 'variants')),
    built_at        INTEGER               -- unix ms of the last object build
);

CREATE TABLE entities (
    shop        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('product', 'collection', 'discount')),
    id          INTEGER NOT NULL,         -- numeric tail of the GID: the objects' order
    body        BLOB NOT NULL,            -- canonical JSON of the entry
    handle      TEXT,                     -- products: their handle (collections list them)
    updated_at  TEXT,                     -- Shopify's updatedAt
    generation  INTEGER NOT NULL,         -- the full sync that last saw it (or the current one)
    fetched_at  INTEGER,                  -- unix ms (our clock) of the last read of it alone
    PRIMARY KEY (shop, kind, id)
) WITHOUT ROWID;

-- inventory item → its variant and product, for `inventory_levels/update` deliveries.
CREATE TABLE inventory_items (
    shop        TEXT NOT NULL,
    item_id     INTEGER NOT NULL,
    product_id  INTEGER NOT NULL,
    variant_id  INTEGER NOT NULL,
    fetched_at  INTEGER,                  -- unix ms of the last read of its levels
    PRIMARY KEY (shop, item_id)
) WITHOUT ROWID;
CREATE INDEX inventory_items_by_product ON inventory_items(shop, product_id);

-- A full sync in progress: products and variants (and, from bulk operations, their child
-- lines in file order) land here first and are assembled into `entities` at the end, so memory
-- stays bounded whatever the catalogue's size and whatever order the lines come in.
CREATE TABLE staged_products (
    shop  TEXT NOT NULL,
    id    INTEGER NOT NULL,
    body  BLOB NOT NULL,
    PRIMARY KEY (shop, id)
) WITHOUT ROWID;
CREATE TABLE staged_variants (
    shop        TEXT NOT NULL,
    product_id  INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (shop, product_id, id)
) WITHOUT ROWID;
CREATE TABLE staged_children (
    shop    TEXT NOT NULL,
    parent  TEXT NOT NULL,                -- the parent's GID
    seq     INTEGER NOT NULL,             -- position in the file
    body    BLOB NOT NULL,
    PRIMARY KEY (shop, parent, seq)
) WITHOUT ROWID;
