/**
 * The browser half of `dstate/web` alone: the read replica client and the
 * errors it names, without the node side (which needs Node). Import this
 * entry (`dstate/web/client`) from code bundled for browsers.
 *
 * @since 0.2.0
 */

/** @since 0.2.0 */
export * as WebClient from "./WebClient.ts"
/** @since 0.2.0 */
export * as WebErrors from "./WebErrors.ts"
