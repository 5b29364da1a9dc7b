-- Distinct genres per window are counted in numpy with the distinct tracks and artists
-- (features._make_key_counts), which needs each activity row's genres as 32-bit keys as
-- it has its tracks' and artists'. In SQL (an unnest of every row's genres over the
-- 30-day window, grouped by user and genre) they were about 40 % of features.user_daily.
-- Existing rows get their keys from their genres here, once, distinct and in ascending
-- order as the build's array_agg(DISTINCT ...) gives them.

ALTER TABLE features.user_activity_daily ADD COLUMN genre_keys integer[];
UPDATE features.user_activity_daily
SET genre_keys = ARRAY(SELECT DISTINCT hashtext(g) FROM unnest(genres) AS g ORDER BY 1);
ALTER TABLE features.user_activity_daily ALTER COLUMN genre_keys SET NOT NULL;
COMMENT ON COLUMN features.user_activity_daily.genre_keys IS 'The genres column as hashtext(genre), for distinct counts over windows.';
