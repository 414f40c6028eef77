import { type Signature, copySignature, newChordUUID, newGroupUUID, newTaskUUID } from './message/signature.js';

/** Go's `NewGroup`: ids filled in, every member told its group and the group's size. */
export interface Group {
  readonly groupUUID: string;
  readonly tasks: Signature[];
}

export interface Chord {
  readonly group: Group;
  readonly callback: Signature;
}

export interface Chain {
  readonly tasks: Signature[];
}

export function group(...signatures: Signature[]): Group {
  const groupUUID = newGroupUUID();
  const tasks = signatures.map((s) => {
    const t = copySignature(s);
    if (!t.UUID) t.UUID = newTaskUUID();
    t.GroupUUID = groupUUID;
    t.GroupTaskCount = signatures.length;
    return t;
  });
  return { groupUUID, tasks };
}

/** Go's `NewChord`: every group task carries a full copy of the callback. */
export function chord(g: Group, callback: Signature): Chord {
  const cb = copySignature(callback);
  if (!cb.UUID) cb.UUID = newChordUUID();
  for (const t of g.tasks) t.ChordCallback = copySignature(cb);
  return { group: g, callback: cb };
}

/**
 * Go's `NewChain`: each later link nested in its predecessor's `OnSuccess`. Unlike Go,
 * `OnSuccess` callbacks a link already had are kept beside the next link.
 */
export function chain(...signatures: Signature[]): Chain {
  const tasks = signatures.map((s) => {
    const t = copySignature(s);
    if (!t.UUID) t.UUID = newTaskUUID();
    return t;
  });
  for (let i = tasks.length - 1; i > 0; i--) {
    const prev = tasks[i - 1] as Signature;
    prev.OnSuccess = [...(prev.OnSuccess ?? []), tasks[i] as Signature];
  }
  return { tasks };
}
