-- Analyst view of the model registry.
-- Re-applied by encore migrate whenever this file changes (ml.view_definitions).

DROP VIEW IF EXISTS analytics.model_leaderboard;
CREATE VIEW analytics.model_leaderboard AS
SELECT r.model_name, r.version, r.status, r.metrics ->> 'chosen' AS family,
       r.train_start, r.train_end, r.trained_at, r.promoted_at,
       (r.metrics -> '7' ->> 'roc_auc')::float8 AS roc_auc_7d,
       (r.metrics -> '30' ->> 'roc_auc')::float8 AS roc_auc_30d,
       (r.metrics -> '90' ->> 'roc_auc')::float8 AS roc_auc_90d,
       (r.metrics -> '30' ->> 'pr_auc')::float8 AS pr_auc_30d,
       (r.metrics -> '30' ->> 'brier')::float8 AS brier_30d,
       (r.metrics -> '30' ->> 'ece')::float8 AS ece_30d,
       (r.metrics -> '30' ->> 'lift_top_decile')::float8 AS lift_top_decile_30d,
       (r.metrics -> 'baseline' -> '30' ->> 'roc_auc')::float8 AS baseline_roc_auc_30d,
       (r.gate_report ->> 'passed')::boolean AS passed_gate,
       r.gate_report -> 'reasons' AS gate_reasons,
       r.model_card_uri
FROM ml.model_registry r;
COMMENT ON VIEW analytics.model_leaderboard IS 'Every trained model with its holdout metrics beside the baseline, its gate verdict and status (champion, candidate, retired).';
COMMENT ON COLUMN analytics.model_leaderboard.model_name IS 'Model family (churn, ...).';
COMMENT ON COLUMN analytics.model_leaderboard.version IS 'Registry version.';
COMMENT ON COLUMN analytics.model_leaderboard.status IS 'champion, candidate or retired.';
COMMENT ON COLUMN analytics.model_leaderboard.family IS 'Algorithm chosen on the holdout (xgboost, lightgbm, catboost, ensemble).';
COMMENT ON COLUMN analytics.model_leaderboard.train_start IS 'First training scoring date.';
COMMENT ON COLUMN analytics.model_leaderboard.train_end IS 'Training date (labels censored as of it).';
COMMENT ON COLUMN analytics.model_leaderboard.trained_at IS 'When it was trained.';
COMMENT ON COLUMN analytics.model_leaderboard.promoted_at IS 'When it became champion (null if never).';
COMMENT ON COLUMN analytics.model_leaderboard.roc_auc_7d IS 'Holdout ROC AUC, 7-day horizon.';
COMMENT ON COLUMN analytics.model_leaderboard.roc_auc_30d IS 'Holdout ROC AUC, 30-day horizon.';
COMMENT ON COLUMN analytics.model_leaderboard.roc_auc_90d IS 'Holdout ROC AUC, 90-day horizon (null until 90-day labels exist).';
COMMENT ON COLUMN analytics.model_leaderboard.pr_auc_30d IS 'Holdout PR AUC, 30 days.';
COMMENT ON COLUMN analytics.model_leaderboard.brier_30d IS 'Holdout Brier score, 30 days.';
COMMENT ON COLUMN analytics.model_leaderboard.ece_30d IS 'Expected calibration error, 30 days (10 bins).';
COMMENT ON COLUMN analytics.model_leaderboard.lift_top_decile_30d IS 'Churn rate in the top decile / overall, 30 days.';
COMMENT ON COLUMN analytics.model_leaderboard.baseline_roc_auc_30d IS 'The recency/frequency baseline''s ROC AUC on the same holdout.';
COMMENT ON COLUMN analytics.model_leaderboard.passed_gate IS 'The promotion gate passed.';
COMMENT ON COLUMN analytics.model_leaderboard.gate_reasons IS 'Why the gate decided as it did.';
COMMENT ON COLUMN analytics.model_leaderboard.model_card_uri IS 'HTML model card beside the artifact.';
