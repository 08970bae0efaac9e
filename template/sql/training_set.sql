-- Training table: one row per customer with usage aggregated over the activity months.
-- Portable SQL (SQLite and PostgreSQL): explicit GROUP BY columns, CAST for averages,
-- NULLIF against division by zero. The sample has one outcome per task (churned,
-- outcome, revenue_next_quarter): data.target names the one the model predicts; the others and
-- retention_call_made are known only afterwards, so data.leaky_columns keeps them out of the
-- model.
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
        AS tickets_per_active_month,
    l.retention_call_made,
    l.churned,
    l.outcome,
    l.revenue_next_quarter
FROM customers AS c
JOIN labels AS l ON l.customer_id = c.customer_id
LEFT JOIN activity AS a ON a.customer_id = c.customer_id
GROUP BY
    c.customer_id, c.age, c.region, c.plan, c.payment_method, c.monthly_charges,
    c.tenure_months, l.retention_call_made, l.churned, l.outcome, l.revenue_next_quarter
ORDER BY c.customer_id
