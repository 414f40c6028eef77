import type { StateUpdate } from '../contracts/backend.js';
import { type GroupMeta, type TaskState, GO_ZERO_TIME, TaskStates } from './signature.js';
import { nowRfc3339Nano } from './time.js';

/**
 * The state document a backend stores for `update`, given what it holds (`old`):
 * PENDING sets TaskName and CreatedAt, later states keep them (where Go's Memcache and
 * AMQP backends lose them). Results only on SUCCESS, Error only on FAILURE.
 */
export function mergeTaskState(update: StateUpdate, old: TaskState | null): TaskState {
  const pending = update.state === TaskStates.PENDING;
  return {
    TaskUUID: update.taskUUID,
    TaskName: pending ? update.taskName : old?.TaskName || update.taskName,
    State: update.state,
    Results: update.state === TaskStates.SUCCESS ? [...(update.results ?? [])] : null,
    Error: update.state === TaskStates.FAILURE ? (update.error ?? '') : '',
    CreatedAt: pending ? nowRfc3339Nano() : (old?.CreatedAt ?? GO_ZERO_TIME),
    TTL: 0,
  };
}

/** A new group document: members in group order, chord not triggered. */
export function newGroupMeta(groupUUID: string, taskUUIDs: readonly string[]): GroupMeta {
  return { GroupUUID: groupUUID, TaskUUIDs: [...taskUUIDs], ChordTriggered: false, Lock: false, CreatedAt: nowRfc3339Nano(), TTL: 0 };
}
