-- Scoring table for batch prediction: the same features as training_set.sql, no labels.
-- Keep the two in step when you change features (the batch command validates the columns).
SELECT
    c.customer_id,
    c.age,
    c.region,
    c.plan,
    c.payment_method,
    c.monthly_charges,
    c.tenure_months,
    CAST(AVG(a.sessions) AS DOUBLE PRECISION) AS avg_sessions,
    CAST(AVG(a.minutes_used) AS DOUBLE PRECISION) AS avg_minutes,
    COALESCE(SUM(a.support_tickets), 0) AS total_tickets,
    COUNT(a.month) AS active_months,
    CAST(SUM(a.support_tickets) AS DOUBLE PRECISION) / NULLIF(COUNT(a.month), 0)
        AS tickets_per_active_month
FROM customers AS c
LEFT JOIN activity AS a ON a.customer_id = c.customer_id
GROUP BY
    c.customer_id, c.age, c.region, c.plan, c.payment_method, c.monthly_charges,
    c.tenure_months
ORDER BY c.customer_id
