-- Releases the rebuild lock only if the caller still holds it (see scripts.rs).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
