-- Shopify's numeric id of each shop, recorded at connect (or, for shops connected before, the
-- first time it is needed). Lifecycle and compliance webhooks carry it in their signed body;
-- it must match, so a signed body cannot be relabelled for another shop or install.
ALTER TABLE shops ADD COLUMN shop_id INTEGER;
