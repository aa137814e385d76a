// sync-users.ts: send every user Better Auth creates, updates or deletes to sync-service, signed with
// the Standard Webhooks scheme. npm install standardwebhooks
import type { BetterAuthOptions, User } from "better-auth";
import { Webhook } from "standardwebhooks";

const endpoint = `${process.env.SYNC_SERVICE_URL}/webhooks/better-auth`; // e.g. https://sync.example.com
const signer = new Webhook(process.env.SYNC_WEBHOOK_SECRET ?? ""); // whsec_..., the service's WEBHOOK_SECRET
const attempts = 4; // retried after 0.5, 1 and 2 s

type UserEvent = "user.created" | "user.updated" | "user.deleted";

async function deliver(type: UserEvent, user: User): Promise<void> {
  // Only the columns the service keeps: plugin fields (role, banReason, ...) stay in Better Auth.
  const { id, email, emailVerified, name, image, createdAt, updatedAt } = user;
  const data = { id, email, emailVerified, name, image, createdAt, updatedAt };
  const body = JSON.stringify({ type, timestamp: new Date().toISOString(), data });
  const messageId = `msg_${crypto.randomUUID()}`; // one id for all attempts: a repeat is a "duplicate"
  let failure = "";
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** (attempt - 1)));
    const now = new Date();
    try {
      const response = await fetch(endpoint, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "webhook-id": messageId,
          "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
          "webhook-signature": signer.sign(messageId, now, body),
        },
        body,
        signal: AbortSignal.timeout(5_000),
      });
      if (response.ok) return; // applied, duplicate, stale or ignored
      failure = `HTTP ${response.status}`;
      // 409: the email is still held by another user (a swap, or a re-sign-up overtaking the deletion),
      // or a table referencing users(id) blocks the deletion; 429/5xx: later.
      const retryable = response.status === 409 || response.status === 429 || response.status >= 500;
      if (!retryable) break; // 400/401/413/422: the same request would fail the same way
    } catch (error) {
      failure = String(error); // network error or timeout
    }
  }
  throw new Error(`sync-service did not take ${type} ${messageId} for user ${id}: ${failure}`);
}

// Better Auth awaits after-hooks inside the request: starting the delivery without awaiting it keeps
// sign-up and profile updates as fast as before, and a sync-service outage cannot fail them.
function send(type: UserEvent, user: User): void {
  void deliver(type, user).catch((error: unknown) => console.error("[sync-users]", error));
}

export const syncUsersToService = {
  user: {
    create: { after: async (user) => send("user.created", user) },
    update: { after: async (user) => send("user.updated", user) },
    // The user row as it was: the service deletes it, keeps a tombstone and erases their data.
    delete: { after: async (user) => send("user.deleted", user) },
  },
} satisfies BetterAuthOptions["databaseHooks"];
