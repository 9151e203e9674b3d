/**
 * The errors of `dstate/web` that both ends name: a refused token or
 * connection, and a browser replica that is not connected. Browser-safe (no
 * Node imports), like `WebClient`.
 *
 * @since 0.2.0
 */
import { Schema } from "effect"
import { RefusalReason } from "./internal/protocol.ts"

/**
 * A connection was refused before any view was sent: its token is
 * `Malformed` (not a token of this format), has a `BadSignature` (not signed
 * with the endpoint's key), is `Expired`, or is `OutOfScope` (it does not
 * allow a state asked for, or the status); or the endpoint had
 * `TooManyConnections`, no hello came in time (`HelloTimeout`), or the first
 * message was not a hello (`BadHello`). The endpoint counts each reason
 * (`Metrics.web`) and closes the connection; the browser client fails with
 * it and does not retry with the same token.
 *
 * @category errors
 * @since 0.2.0
 */
export class WebTokenRefused extends Schema.TaggedError<WebTokenRefused>()("WebTokenRefused", {
  reason: RefusalReason,
  detail: Schema.String
}) {
  override get message() {
    return `refused (${this.reason}): ${this.detail}`
  }
}

/**
 * A browser replica has never been connected, or `connect` gave up: the
 * node could not be reached within the client's `connectTimeout`.
 *
 * @category errors
 * @since 0.2.0
 */
export class WebDisconnected extends Schema.TaggedError<WebDisconnected>()("WebDisconnected", {
  url: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `not connected to ${this.url}: ${this.reason}`
  }
}
