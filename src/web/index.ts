/**
 * dstate in the browser: read replicas of chosen states over a WebSocket
 * endpoint of the operations server (`WebReplicas`, node side), the
 * short-lived tokens that authorize them (`WebToken`), the browser client
 * with the read API of a state handle (`WebClient`, no Node APIs), and the
 * errors both ends name (`WebErrors`). `GET /` of the same server is a live
 * dashboard built on the client.
 *
 * Code bundled for browsers imports `dstate/web/client` (the client and
 * the errors alone); this entry also carries the node side.
 *
 * @since 0.2.0
 */

/** @since 0.2.0 */
export * as WebClient from "./WebClient.ts"
/** @since 0.2.0 */
export * as WebErrors from "./WebErrors.ts"
/** @since 0.2.0 */
export * as WebReplicas from "./WebReplicas.ts"
/** @since 0.2.0 */
export * as WebToken from "./WebToken.ts"
