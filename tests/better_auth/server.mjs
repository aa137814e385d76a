// A real Better Auth 1.7 server (memory adapter, jwt plugin defaults) on 127.0.0.1, with the README's
// hook code (build/sync-users.mjs, from sync-users.ts) sending its users to sync-service.
// Environment: BETTER_AUTH_URL (http://127.0.0.1:PORT), BETTER_AUTH_SECRET, SYNC_SERVICE_URL,
// SYNC_WEBHOOK_SECRET.
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";
import { syncUsersToService } from "./build/sync-users.mjs";

const auth = betterAuth({
  baseURL: process.env.BETTER_AUTH_URL,
  secret: process.env.BETTER_AUTH_SECRET,
  // The memory adapter needs every model declared up front, the jwt plugin's `jwks` included.
  database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  emailAndPassword: { enabled: true },
  user: { deleteUser: { enabled: true } },
  advanced: { database: { generateId: "uuid" } },
  plugins: [jwt()],
  databaseHooks: syncUsersToService,
});

const handle = toNodeHandler(auth);
const { hostname, port } = new URL(process.env.BETTER_AUTH_URL);
const server = http.createServer((request, response) => {
  if (request.url.startsWith("/api/auth/")) return handle(request, response);
  response.statusCode = 404;
  response.end();
});
server.listen(Number(port), hostname, () => console.log(`better-auth listening on ${process.env.BETTER_AUTH_URL}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
