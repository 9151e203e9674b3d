/**
 * The node-resource fixture of `dstate/testing` as the options of a delta
 * state, for tests that define their own variant of it (another name, wire
 * version, decoders or urgency): `DistributedState.makeDelta({ name, ...nodeResource })`.
 */
import { Fixtures } from "dstate/testing"

/** Schemas and functions of the node-resource delta state, without a name. */
export const nodeResource = {
  state: Fixtures.NodeResourceState,
  view: Fixtures.NodeResourceView,
  delta: Fixtures.NodeResourceDelta,
  initial: Fixtures.NodeResource.initial,
  projectView: Fixtures.NodeResource.projectView,
  projectDelta: Fixtures.NodeResource.projectDelta,
  applyDelta: Fixtures.NodeResource.applyDelta
}
