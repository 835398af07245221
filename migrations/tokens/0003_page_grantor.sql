-- The Facebook user whose login granted each page, so Meta's data deletion request for that
-- user finds exactly the pages they granted (a merchant may reconnect as another user).
ALTER TABLE pages ADD COLUMN fb_user_id TEXT;
CREATE INDEX pages_by_fb_user ON pages(fb_user_id);
