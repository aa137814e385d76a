DROP INDEX webhook_events_unowned_email_idx;
DROP TABLE deleted_users;
