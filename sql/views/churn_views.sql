-- Analyst views over churn scores and intervention plans.
-- Re-applied by encore migrate whenever this file changes (ml.view_definitions).

DROP VIEW IF EXISTS analytics.latest_churn_scores;
CREATE VIEW analytics.latest_churn_scores AS
SELECT DISTINCT ON (c.user_id)
       c.user_id, c.dt AS scored_for, c.p_churn_7d, c.p_churn_30d, c.p_churn_90d, c.risk_tier,
       c.segment, c.tags, c.plan, c.is_paying, c.reasons, c.model_version, c.scored_at
FROM scores.churn c
ORDER BY c.user_id, c.dt DESC;
COMMENT ON VIEW analytics.latest_churn_scores IS 'The most recent churn score of every user ever scored (a user no longer active keeps their last score; see scored_for).';
COMMENT ON COLUMN analytics.latest_churn_scores.user_id IS 'User.';
COMMENT ON COLUMN analytics.latest_churn_scores.scored_for IS 'Scoring day of this score.';
COMMENT ON COLUMN analytics.latest_churn_scores.p_churn_7d IS 'P(churn within 7 days).';
COMMENT ON COLUMN analytics.latest_churn_scores.p_churn_30d IS 'P(churn within 30 days).';
COMMENT ON COLUMN analytics.latest_churn_scores.p_churn_90d IS 'P(churn within 90 days).';
COMMENT ON COLUMN analytics.latest_churn_scores.risk_tier IS 'low, medium, high, critical (from p_churn_30d).';
COMMENT ON COLUMN analytics.latest_churn_scores.segment IS 'heavy, moderate or light listener.';
COMMENT ON COLUMN analytics.latest_churn_scores.tags IS 'Behavioural tags.';
COMMENT ON COLUMN analytics.latest_churn_scores.plan IS 'Plan on the scoring day.';
COMMENT ON COLUMN analytics.latest_churn_scores.is_paying IS 'Paid plan on the scoring day.';
COMMENT ON COLUMN analytics.latest_churn_scores.reasons IS 'Top three reasons: feature, its value, its contribution (log-odds).';
COMMENT ON COLUMN analytics.latest_churn_scores.model_version IS 'Churn model version.';
COMMENT ON COLUMN analytics.latest_churn_scores.scored_at IS 'When it was scored.';

DROP VIEW IF EXISTS analytics.at_risk_today;
CREATE VIEW analytics.at_risk_today AS
SELECT c.user_id, c.dt AS scored_for, c.risk_tier, c.p_churn_30d, c.p_churn_90d, c.segment,
       c.tags, c.plan, c.reasons, i.intervention AS recommended_intervention, i.selected AS in_plan,
       i.expected_net_value, i.reason AS intervention_reason
FROM scores.churn c
LEFT JOIN scores.interventions i ON i.dt = c.dt AND i.user_id = c.user_id
WHERE c.dt = (SELECT max(dt) FROM scores.churn) AND c.risk_tier IN ('high', 'critical');
COMMENT ON VIEW analytics.at_risk_today IS 'Users in the high or critical risk tier on the latest scoring day, with the recommended intervention and whether the budget covers it.';
COMMENT ON COLUMN analytics.at_risk_today.user_id IS 'User.';
COMMENT ON COLUMN analytics.at_risk_today.scored_for IS 'Latest scoring day.';
COMMENT ON COLUMN analytics.at_risk_today.risk_tier IS 'high or critical.';
COMMENT ON COLUMN analytics.at_risk_today.p_churn_30d IS 'P(churn within 30 days).';
COMMENT ON COLUMN analytics.at_risk_today.p_churn_90d IS 'P(churn within 90 days).';
COMMENT ON COLUMN analytics.at_risk_today.segment IS 'heavy, moderate or light listener.';
COMMENT ON COLUMN analytics.at_risk_today.tags IS 'Behavioural tags.';
COMMENT ON COLUMN analytics.at_risk_today.plan IS 'Plan on the scoring day.';
COMMENT ON COLUMN analytics.at_risk_today.reasons IS 'Top three reasons behind the score.';
COMMENT ON COLUMN analytics.at_risk_today.recommended_intervention IS 'Best intervention with a positive expected net value (null: none pays off).';
COMMENT ON COLUMN analytics.at_risk_today.in_plan IS 'The daily budget covers it.';
COMMENT ON COLUMN analytics.at_risk_today.expected_net_value IS 'P(churn) x value at risk x uplift - cost, in dollars.';
COMMENT ON COLUMN analytics.at_risk_today.intervention_reason IS 'The arithmetic and the budget decision.';

DROP VIEW IF EXISTS analytics.intervention_plan_daily;
CREATE VIEW analytics.intervention_plan_daily AS
SELECT dt, coalesce(intervention, '(none)') AS intervention,
       count(*) AS users_recommended,
       count(*) FILTER (WHERE selected) AS users_in_plan,
       coalesce(sum(cost) FILTER (WHERE selected), 0) AS cost_in_plan,
       coalesce(sum(expected_net_value) FILTER (WHERE selected), 0) AS expected_net_value_in_plan,
       coalesce(sum(expected_net_value) FILTER (WHERE NOT selected), 0) AS expected_net_value_left_out
FROM scores.interventions
GROUP BY dt, coalesce(intervention, '(none)');
COMMENT ON VIEW analytics.intervention_plan_daily IS 'The daily intervention plan: per day and intervention, users recommended and within budget, cost and expected net value.';
COMMENT ON COLUMN analytics.intervention_plan_daily.dt IS 'Scoring day.';
COMMENT ON COLUMN analytics.intervention_plan_daily.intervention IS 'Intervention, or (none) for users where none pays off.';
COMMENT ON COLUMN analytics.intervention_plan_daily.users_recommended IS 'Users for whom it is the best positive intervention.';
COMMENT ON COLUMN analytics.intervention_plan_daily.users_in_plan IS 'Of those, users the budget covers.';
COMMENT ON COLUMN analytics.intervention_plan_daily.cost_in_plan IS 'Cost of the covered ones, in dollars.';
COMMENT ON COLUMN analytics.intervention_plan_daily.expected_net_value_in_plan IS 'Expected net value of the covered ones, in dollars.';
COMMENT ON COLUMN analytics.intervention_plan_daily.expected_net_value_left_out IS 'Expected net value the budget left on the table.';
