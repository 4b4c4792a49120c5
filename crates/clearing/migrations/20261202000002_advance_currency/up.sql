-- An advance line (垫付额度) has a currency: '' when there is no line. Lines granted before lines
-- had a currency were used in every currency; they are kept as CNY lines, the platform's home
-- currency (staff re-grant a line in another currency with `UpsertMerchantPolicy`).
ALTER TABLE policies ADD COLUMN advance_currency TEXT NOT NULL DEFAULT '';
UPDATE policies SET advance_currency = 'CNY' WHERE advance_limit <> '0';
