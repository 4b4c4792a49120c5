DROP TABLE channel_notifications;
DROP TABLE channel_refunds;
