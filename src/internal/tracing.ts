/**
 * The spans of one state's data path. A mutation is one trace across nodes:
 *
 * ```text
 * dstate.mutate   (the caller's fiber)          state, node, generation
 * ├─ dstate.persist (one per save; links to the other mutations it covered)
 * ├─ dstate.publish (the view made visible, the caller acknowledged)
 * └─ dstate.send    (the first broadcast of that generation)  kind, bytes, peers
 *    └─ dstate.apply (on each receiver, from the trace context of the frame)
 *                                                state, owner, generation, bytes, accepted
 * ```
 *
 * Spans are made only when the fiber has tracing enabled and a tracer
 * installed (any `Tracer` other than Effect's built-in default, which records
 * nothing anyone reads), so a node without one pays nothing but a check.
 * The runtime carries the send span's context to the receivers where their
 * wire allows (`ActorRuntime.TraceContext`).
 * @internal
 */
import { Effect, type Fiber, Tracer } from "effect"
import type { TraceContext } from "../ActorRuntime.ts"
import * as Generation from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"

/** The span names, as documented in the README. */
export const spanNames = {
  mutate: "dstate.mutate",
  persist: "dstate.persist",
  publish: "dstate.publish",
  send: "dstate.send",
  apply: "dstate.apply"
} as const

/** Whether `fiber` makes dstate's spans. */
const active = (fiber: Fiber.Fiber<unknown, unknown>): boolean =>
  fiber.cache.tracerEnabled && fiber.cache.tracer !== undefined

const contextOf = (span: Tracer.AnySpan | undefined): TraceContext | undefined =>
  span === undefined ? undefined : { traceId: span.traceId, spanId: span.spanId, sampled: span.sampled }

const noStack = { captureStackTrace: false } as const

export interface Tracing {
  /** Runs a mutation (in the caller's fiber) inside `dstate.mutate`, giving it the span (`undefined`: no spans). */
  readonly mutate: <A extends { readonly generation: Generation.Generation }, E>(
    f: (span: Tracer.AnySpan | undefined) => Effect.Effect<A, E>
  ) => Effect.Effect<A, E>
  /** A save covering the mutations of `spans` (the newest last) inside `dstate.persist`. */
  readonly persist: <E>(
    spans: ReadonlyArray<Tracer.AnySpan>,
    generation: Generation.Generation,
    save: Effect.Effect<void, E>
  ) => Effect.Effect<void, E>
  /** Runs a commit inside `dstate.publish` under the mutation's span; the commit calls `committed`. */
  readonly publish: (span: Tracer.AnySpan | undefined, commit: () => Effect.Effect<void>) => Effect.Effect<void>
  /** The commit of the running `publish` made `generation` visible: its sends belong to that mutation. */
  readonly committed: (generation: Generation.Generation) => void
  /**
   * Broadcasts a frame of `generation` inside `dstate.send` when it is the first broadcast of a traced
   * mutation's generation (`send` gets the span's context for the runtime), else sends it untraced.
   * Frames sent to one peer (the join exchange, answers to hints) are not part of a mutation's trace.
   */
  readonly send: (
    generation: Generation.Generation,
    kind: "snapshot" | "delta",
    bytes: number,
    peers: number,
    send: (trace: TraceContext | undefined) => Effect.Effect<void>
  ) => Effect.Effect<void>
  /** Applies an inbound frame inside `dstate.apply`, a child of the sender's span, when it came with one. */
  readonly apply: (
    trace: TraceContext | undefined,
    message: { readonly source: NodeId; readonly generation: Generation.Generation; readonly payload: Uint8Array },
    apply: () => Effect.Effect<void>,
    accepted: () => boolean
  ) => Effect.Effect<void>
}

export const make = (stateName: string, self: NodeId): Tracing => {
  /** The span of the commit running now (set while `publish` runs it). */
  let committing: Tracer.AnySpan | undefined
  /** The newest traced commit whose generation has not been broadcast yet. */
  let unsent: { readonly generation: Generation.Generation; readonly span: Tracer.AnySpan } | undefined

  return {
    mutate: (f) =>
      Effect.withFiber((fiber) => {
        if (!active(fiber)) return f(undefined)
        return Effect.withSpan(
          Effect.withFiber((inner) =>
            Effect.tap(f(inner.cache.span), (committed) =>
              Effect.annotateCurrentSpan("dstate.generation", Generation.format(committed.generation)))
          ),
          spanNames.mutate,
          { attributes: { "dstate.state": stateName, "dstate.node": self }, kind: "producer", ...noStack }
        )
      }),
    persist: (spans, generation, save) =>
      spans.length === 0 ? save : Effect.withSpan(save, spanNames.persist, {
        parent: spans[spans.length - 1],
        links: spans.slice(0, -1).map((span) => ({ span, attributes: {} })),
        attributes: {
          "dstate.state": stateName,
          "dstate.generation": Generation.format(generation),
          "dstate.mutations": spans.length
        },
        ...noStack
      }),
    publish: (span, commit) =>
      span === undefined ? commit() : Effect.withSpan(
        Effect.suspend(() => {
          committing = span
          const sent = commit() // publishes and acknowledges at once; returns the sends
          committing = undefined
          return sent
        }),
        spanNames.publish,
        { parent: span, attributes: { "dstate.state": stateName }, ...noStack }
      ),
    committed: (generation) => {
      if (committing !== undefined) unsent = { generation, span: committing }
    },
    send: (generation, kind, bytes, peers, send) => {
      const traced = unsent
      if (traced === undefined || !Generation.equals(traced.generation, generation)) return send(undefined)
      unsent = undefined
      return Effect.withSpan(Effect.withFiber((fiber) => send(contextOf(fiber.cache.span))), spanNames.send, {
        parent: traced.span,
        kind: "producer",
        attributes: {
          "dstate.state": stateName,
          "dstate.generation": Generation.format(generation),
          "dstate.kind": kind,
          "dstate.bytes": bytes,
          "dstate.peers": peers
        },
        ...noStack
      })
    },
    apply: (trace, message, apply, accepted) =>
      trace === undefined ? apply() : Effect.withFiber((fiber) => {
        if (!active(fiber)) return apply()
        return Effect.withSpan(
          Effect.andThen(apply(), Effect.suspend(() => Effect.annotateCurrentSpan("dstate.accepted", accepted()))),
          spanNames.apply,
          {
            parent: Tracer.externalSpan(trace),
            kind: "consumer",
            attributes: {
              "dstate.state": stateName,
              "dstate.node": self,
              "dstate.owner": message.source,
              "dstate.generation": Generation.format(message.generation),
              "dstate.bytes": message.payload.length
            },
            ...noStack
          }
        )
      })
  }
}
