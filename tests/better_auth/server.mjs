// A real Better Auth 1.7 server (memory adapter, jwt plugin defaults) on 127.0.0.1, with the README's
// hook code (build/sync-users.mjs, from sync-users.ts) sending its users to sync-service.
// Environment: BETTER_AUTH_URL (http://127.0.0.1:PORT), BETTER_AUTH_SECRET, SYNC_SERVICE_URL,
// SYNC_WEBHOOK_SECRET. With BETTER_AUTH_DATABASE_URL it keeps its data in that PostgreSQL database
// instead (the pg adapter; Better Auth's own migrations create its schema at start), and without
// SYNC_SERVICE_URL it sends no webhooks (users the service has not seen: what `backfill` is for).
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { getMigrations } from "better-auth/db/migration";
import { jwt } from "better-auth/plugins";
import pg from "pg";
import { syncUsersToService } from "./build/sync-users.mjs";

const databaseUrl = process.env.BETTER_AUTH_DATABASE_URL;
const auth = betterAuth({
  baseURL: process.env.BETTER_AUTH_URL,
  secret: process.env.BETTER_AUTH_SECRET,
  // The memory adapter needs every model declared up front, the jwt plugin's `jwks` included.
  database: databaseUrl
    ? new pg.Pool({ connectionString: databaseUrl })
    : memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  emailAndPassword: { enabled: true },
  user: { deleteUser: { enabled: true } },
  advanced: { database: { generateId: "uuid" } },
  plugins: [jwt()],
  databaseHooks: process.env.SYNC_SERVICE_URL ? syncUsersToService : undefined,
});
if (databaseUrl) await (await getMigrations(auth.options)).runMigrations();

const handle = toNodeHandler(auth);
const { hostname, port } = new URL(process.env.BETTER_AUTH_URL);
const server = http.createServer((request, response) => {
  if (request.url.startsWith("/api/auth/")) return handle(request, response);
  response.statusCode = 404;
  response.end();
});
server.listen(Number(port), hostname, () => console.log(`better-auth listening on ${process.env.BETTER_AUTH_URL}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
