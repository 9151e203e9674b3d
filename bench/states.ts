/**
 * The states of the TCP benchmarks, shared by the benchmark driver
 * (bench/tcp.ts, which sizes their frames for the baselines) and the
 * benchmark nodes (bench/tcpNode.ts, which register them):
 *
 * - `Small`: a simple state with a 200-byte view and its send time;
 * - `Large`: a simple state whose view is a byte blob;
 * - `Feed`: a delta state whose every mutation is one small delta, sent on
 *   its own (nothing supersedes it but a snapshot).
 */
import { Schema } from "effect"
import { DistributedState } from "dstate"

export const SmallView = Schema.Struct({ seq: Schema.Int, sentAt: Schema.Finite, data: Schema.String })
export const Small = DistributedState.make({
  name: "bench",
  schema: SmallView,
  initial: () => ({ seq: 0, sentAt: 0, data: "x".repeat(180) })
})

export const LargeView = Schema.Struct({ seq: Schema.Int, sentAt: Schema.Finite, blob: Schema.Uint8Array })
export const Large = DistributedState.make({
  name: "large",
  schema: LargeView,
  initial: () => ({ seq: 0, sentAt: 0, blob: new Uint8Array(0) })
})

export const FeedView = Schema.Struct({ seq: Schema.Int, sentAt: Schema.Finite })
export const Feed = DistributedState.makeDelta({
  name: "feed",
  state: FeedView,
  view: FeedView,
  delta: FeedView,
  initial: () => ({ seq: 0, sentAt: 0 }),
  projectView: (s) => s,
  projectDelta: (change: typeof FeedView.Type) => change,
  applyDelta: (_view, delta) => delta
})
