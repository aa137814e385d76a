DROP FUNCTION sync_service_guard_batch(integer[], text[], text[], text[], text[]);
DROP FUNCTION sync_service_erased(text, text, jsonb);
