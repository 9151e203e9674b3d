/**
 * The helpers of `./helpers.ts`, under the name the simulation tests import.
 */
export * from "./helpers.ts"
