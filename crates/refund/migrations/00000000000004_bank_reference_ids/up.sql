-- Bank reference ids within each channel's rules (portable SQL, SQLite and PostgreSQL).
-- '' means the channel kind's default: UnionPay channels use the unionpay scheme (orderId: 8-32
-- letters and digits), the others the platform's own ids. Ids already issued stay as they are.
ALTER TABLE channels ADD COLUMN id_scheme TEXT NOT NULL DEFAULT '';
