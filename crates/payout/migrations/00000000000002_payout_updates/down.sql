DROP TABLE payout_updates;
