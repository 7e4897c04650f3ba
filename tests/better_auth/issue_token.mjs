// A real Better Auth app (jwt plugin, in-memory adapter) on 127.0.0.1: signs up one user, fetches a JWT
// from /api/auth/token, prints {"baseURL", "token", "userId"} as one JSON line, then keeps serving
// /api/auth/jwks until stdin closes. Used by tests/test_better_auth.py.
import { randomBytes } from "node:crypto";
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const baseURL = `http://127.0.0.1:${server.address().port}`;

const auth = betterAuth({
  baseURL,
  secret: randomBytes(32).toString("hex"),
  database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  emailAndPassword: { enabled: true },
  plugins: [jwt()],
  logger: { disabled: true },
});
server.on("request", toNodeHandler(auth));

const email = `user-${randomBytes(6).toString("hex")}@example.com`;
const signUp = await fetch(`${baseURL}/api/auth/sign-up/email`, {
  method: "POST",
  headers: { "content-type": "application/json", origin: baseURL },
  body: JSON.stringify({ email, password: randomBytes(12).toString("hex"), name: "Test User" }),
});
if (!signUp.ok) throw new Error(`sign-up failed: ${signUp.status} ${await signUp.text()}`);
const { user } = await signUp.json();
const cookie = signUp.headers
  .getSetCookie()
  .map((c) => c.split(";")[0])
  .join("; ");

const tokenResponse = await fetch(`${baseURL}/api/auth/token`, { headers: { cookie, origin: baseURL } });
if (!tokenResponse.ok) throw new Error(`/api/auth/token failed: ${tokenResponse.status}`);
const { token } = await tokenResponse.json();

process.stdout.write(`${JSON.stringify({ baseURL, token, userId: user.id, email })}\n`);
process.stdin.resume();
process.stdin.on("end", () => server.close(() => process.exit(0)));
