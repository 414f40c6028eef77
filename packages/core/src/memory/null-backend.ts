import type { Backend, BackendCapabilities, ChordTriggerResult, StateUpdate } from '../contracts/backend.js';
import type { GroupMeta, TaskState } from '../message/signature.js';

/**
 * Stores nothing: for fire-and-forget tasks whose outcome nobody reads, where every state
 * write would be a wasted round trip (Go's `null` backend, `result_backend: null`).
 *
 * Unlike Go's, it says so instead of hanging: `AsyncResult.get()` rejects at once with a
 * `ConfigError`, and `sendChord` refuses a chord, whose callback could never fire (a chord
 * member sent by someone else completes without firing it, as in Go). Groups and chains
 * work: they need no stored state.
 */
export class NullBackend implements Backend {
  readonly capabilities: BackendCapabilities = { waitForState: false, mayEvict: false, orderedWrites: true, storesStates: false };

  async setState(_update: StateUpdate): Promise<void> {}
  async setStates(_updates: readonly StateUpdate[]): Promise<void> {}
  async getState(_taskUUID: string): Promise<TaskState | null> {
    return null;
  }
  async initGroup(_groupUUID: string, _taskUUIDs: readonly string[]): Promise<void> {}
  async getGroupMeta(_groupUUID: string): Promise<GroupMeta | null> {
    return null;
  }
  async groupTaskStates(_groupUUID: string, _count: number): Promise<(TaskState | null)[]> {
    return [];
  }
  async triggerChord(): Promise<ChordTriggerResult> {
    return { fired: false, reason: 'no-group' };
  }
  async resetChordTrigger(_groupUUID: string): Promise<void> {}
  async purgeState(_taskUUID: string): Promise<void> {}
  async purgeGroupMeta(_groupUUID: string): Promise<void> {}
  async close(): Promise<void> {}
}
