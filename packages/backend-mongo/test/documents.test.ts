import { type TaskResult, TaskStates, resultsFromWire } from '@machinery-ts/core';
import { Binary, Decimal128, Double, Long, MongoClient } from 'mongodb';
import { describe, expect, it, vi } from 'vitest';
import {
  MongoBackend,
  documentToGroupMeta,
  documentToState,
  groupMetaToDocument,
  isExpired,
  normaliseUrl,
  resultsToBson,
  stateToDocument,
} from '../src/index.js';

const now = new Date('2026-11-22T20:18:13.156Z');
const in1h = new Date('2026-11-22T21:18:13.156Z');
const in60s = new Date('2026-11-22T20:19:13.156Z');
const uuid = 'task_5c3c5a6e-6d5e-4d2f-9a1e-0b6f5e0c1a11';

describe('stateToDocument: the $set of the upsert, field for field', () => {
  it('PENDING: {state, task_name, created_at} (+ delete_at unless expirePending is false)', () => {
    const update = { taskUUID: uuid, taskName: 'add', state: TaskStates.PENDING };
    expect(stateToDocument(update, now, 3600, false)).toStrictEqual({ state: 'PENDING', task_name: 'add', created_at: now });
    expect(stateToDocument(update, now, 3600)).toStrictEqual({
      state: 'PENDING',
      task_name: 'add',
      created_at: now,
      delete_at: in1h,
    });
  });

  it.each([TaskStates.RECEIVED, TaskStates.STARTED, TaskStates.RETRY])('%s: {state} only (+ delete_at)', (state) => {
    const update = { taskUUID: uuid, taskName: 'ignored', state };
    expect(stateToDocument(update, now, 60, false)).toStrictEqual({ state });
    expect(stateToDocument(update, now, 60)).toStrictEqual({ state, delete_at: in60s });
  });

  it('SUCCESS: {state, results:[{type, value}], delete_at} with Int64, double, binary and json values', () => {
    const results: TaskResult[] = [
      { Type: 'string', Value: 'ab' },
      { Type: 'int64', Value: 7 },
      { Type: 'int64', Value: 9007199254740993n },
      { Type: 'int', Value: -3 },
      { Type: 'int8', Value: 1 },
      { Type: 'int16', Value: 2 },
      { Type: 'int32', Value: 3 },
      { Type: 'uint', Value: 4 },
      { Type: 'uint8', Value: 5 },
      { Type: 'uint16', Value: 6 },
      { Type: 'uint32', Value: 4294967295 },
      { Type: 'uint64', Value: 18446744073709551615n },
      { Type: 'float64', Value: 1.5 },
      { Type: 'float32', Value: 2 },
      { Type: 'bool', Value: true },
      { Type: '[]uint8', Value: 'aGk=' },
      { Type: '[]byte', Value: 'AAE=' },
      { Type: '[]string', Value: ['a', 'b'] },
      { Type: '[]int64', Value: [1, 9007199254740993n] },
      { Type: '[]float64', Value: [0.5, 3] },
      { Type: 'string', Value: '{"a":1,"b":[true,"x"],"c":{"d":null},"big":9007199254740993}' },
      { Type: 'string', Value: '[1,2]' },
      { Type: 'string', Value: '{not json' },
      { Type: 'string', Value: '{"$where":"x"}' },
      { Type: 'main.Foo', Value: { X: 1, Y: 'y', Z: 0.25 } },
      { Type: 'int64', Value: null },
    ];
    const update = { taskUUID: uuid, taskName: '', state: TaskStates.SUCCESS, results };
    expect(stateToDocument(update, now, 0)).toStrictEqual({
      state: 'SUCCESS',
      results: [
        { type: 'string', value: 'ab' },
        { type: 'int64', value: Long.fromNumber(7) },
        { type: 'int64', value: Long.fromString('9007199254740993') },
        { type: 'int', value: Long.fromNumber(-3) },
        { type: 'int8', value: Long.fromNumber(1) },
        { type: 'int16', value: Long.fromNumber(2) },
        { type: 'int32', value: Long.fromNumber(3) },
        { type: 'uint', value: Long.fromNumber(4) },
        { type: 'uint8', value: Long.fromNumber(5) },
        { type: 'uint16', value: Long.fromNumber(6) },
        { type: 'uint32', value: Long.fromNumber(4294967295) },
        { type: 'uint64', value: Decimal128.fromString('18446744073709551615') },
        { type: 'float64', value: new Double(1.5) },
        { type: 'float32', value: new Double(2) },
        { type: 'bool', value: true },
        { type: '[]uint8', value: new Binary(Buffer.from('hi')) },
        { type: '[]byte', value: new Binary(Buffer.from([0, 1])) },
        { type: '[]string', value: ['a', 'b'] },
        { type: '[]int64', value: [Long.fromNumber(1), Long.fromString('9007199254740993')] },
        { type: '[]float64', value: [new Double(0.5), new Double(3)] },
        {
          type: 'json',
          value: { a: new Double(1), b: [true, 'x'], c: { d: null }, big: Long.fromString('9007199254740993') },
        },
        { type: 'string', value: '[1,2]' },
        { type: 'string', value: '{not json' },
        { type: 'string', value: '{"$where":"x"}' },
        { type: 'main.Foo', value: { X: Long.fromNumber(1), Y: 'y', Z: new Double(0.25) } },
        { type: 'int64', value: null },
      ],
      delete_at: in1h, // resultsExpireIn 0 → 3600 (Go would write delete_at = now)
    });
  });

  it('SUCCESS without results stores [] (a task returning only error)', () => {
    expect(stateToDocument({ taskUUID: uuid, taskName: '', state: TaskStates.SUCCESS }, now, 60)).toStrictEqual({
      state: 'SUCCESS',
      results: [],
      delete_at: in60s,
    });
  });

  it('FAILURE: {state, error, delete_at}', () => {
    const update = { taskUUID: uuid, taskName: '', state: TaskStates.FAILURE, error: 'boom: x' };
    expect(stateToDocument(update, now, 60, false)).toStrictEqual({ state: 'FAILURE', error: 'boom: x', delete_at: in60s });
  });
});

describe('group meta', () => {
  it('{_id, task_uuids, chord_triggered:false, lock:false, created_at} (+ delete_at)', () => {
    expect(groupMetaToDocument('group_1', ['task_a', 'task_b'], now, 3600, false)).toStrictEqual({
      _id: 'group_1',
      task_uuids: ['task_a', 'task_b'],
      chord_triggered: false,
      lock: false,
      created_at: now,
    });
    expect(groupMetaToDocument('group_1', ['task_a'], now, 0)).toStrictEqual({
      _id: 'group_1',
      task_uuids: ['task_a'],
      chord_triggered: false,
      lock: false,
      created_at: now,
      delete_at: in1h,
    });
  });

  it('reads back as GroupMeta', () => {
    const doc = { _id: 'group_1', task_uuids: ['task_b', 'task_a'], chord_triggered: true, lock: false, created_at: now };
    expect(documentToGroupMeta(doc)).toStrictEqual({
      GroupUUID: 'group_1',
      TaskUUIDs: ['task_b', 'task_a'],
      ChordTriggered: true,
      Lock: false,
      CreatedAt: '2026-11-22T20:18:13.156Z',
      TTL: 0,
    });
  });
});

describe('documentToState', () => {
  it('reads a Go-written SUCCESS document with an exact int64 beyond 2^53', () => {
    const goDoc = {
      _id: uuid,
      state: 'SUCCESS',
      task_name: 'add',
      created_at: now,
      results: [
        { type: 'int64', value: Long.fromString('9007199254740993') },
        { type: 'int64', value: Long.fromNumber(2) },
        { type: 'float64', value: 1.5 },
        { type: '[]uint8', value: new Binary(Buffer.from('hi')) },
        { type: 'string', value: 'ab' },
        { type: 'json', value: { a: 1, big: Long.fromString('-9007199254740993') } },
      ],
      delete_at: in1h,
    };
    const state = documentToState(goDoc);
    expect(state).toStrictEqual({
      TaskUUID: uuid,
      TaskName: 'add',
      State: 'SUCCESS',
      Results: [
        { Type: 'int64', Value: 9007199254740993n },
        { Type: 'int64', Value: 2 },
        { Type: 'float64', Value: 1.5 },
        { Type: '[]uint8', Value: 'aGk=' },
        { Type: 'string', Value: 'ab' },
        { Type: 'string', Value: '{"a":1,"big":-9007199254740993}' },
      ],
      Error: '',
      CreatedAt: '2026-11-22T20:18:13.156Z',
      TTL: 0,
    });
    expect(resultsFromWire(state.Results)).toStrictEqual([
      9007199254740993n,
      2n,
      1.5,
      new Uint8Array(Buffer.from('hi')),
      'ab',
      '{"a":1,"big":-9007199254740993}',
    ]);
  });

  it('round-trips what stateToDocument writes (json strings come back as string results)', () => {
    const results: TaskResult[] = [
      { Type: 'int64', Value: 9007199254740993n },
      { Type: 'uint64', Value: 18446744073709551615n },
      { Type: 'int32', Value: 3 },
      { Type: 'float32', Value: 0.5 },
      { Type: '[]uint8', Value: 'aGk=' },
      { Type: '[]int64', Value: [1, 2] },
      { Type: 'string', Value: '{"a": 1, "b": "x"}' },
    ];
    const set = stateToDocument({ taskUUID: uuid, taskName: '', state: TaskStates.SUCCESS, results }, now, 60);
    const back = documentToState({ _id: uuid, task_name: 'add', created_at: now, ...set });
    expect(back.Results).toStrictEqual([
      { Type: 'int64', Value: 9007199254740993n },
      { Type: 'uint64', Value: 18446744073709551615n },
      { Type: 'int32', Value: 3 },
      { Type: 'float32', Value: 0.5 },
      { Type: '[]uint8', Value: 'aGk=' },
      { Type: '[]int64', Value: [1, 2] },
      { Type: 'string', Value: '{"a":1,"b":"x"}' },
    ]);
    expect(resultsFromWire(back.Results)).toStrictEqual([
      9007199254740993n,
      18446744073709551615n,
      3,
      0.5,
      new Uint8Array(Buffer.from('hi')),
      [1n, 2n],
      '{"a":1,"b":"x"}',
    ]);
  });

  it('accepts bigint Longs (useBigInt64 reads) and normalises like Go JSON documents', () => {
    expect(documentToState({ _id: uuid, state: 'STARTED', results: [], error: 'old' })).toStrictEqual({
      TaskUUID: uuid,
      TaskName: '',
      State: 'STARTED',
      Results: null,
      Error: '',
      CreatedAt: '0001-01-01T00:00:00Z',
      TTL: 0,
    });
    expect(
      documentToState({ _id: uuid, state: 'FAILURE', error: 'e', task_name: 'n', created_at: now, ttl: 5n }),
    ).toStrictEqual({
      TaskUUID: uuid,
      TaskName: 'n',
      State: 'FAILURE',
      Results: null,
      Error: 'e',
      CreatedAt: '2026-11-22T20:18:13.156Z',
      TTL: 5,
    });
    expect(documentToState({ _id: uuid, state: 'SUCCESS', results: [{ type: 'int64', value: 12345678901234567n }] }).Results).toStrictEqual([
      { Type: 'int64', Value: 12345678901234567n },
    ]);
    expect(documentToState({ _id: uuid, state: 'SUCCESS', results: null }).Results).toStrictEqual([]);
  });
});

describe('helpers', () => {
  it('isExpired compares delete_at with now', () => {
    expect(isExpired({ delete_at: now }, now.getTime())).toBe(true);
    expect(isExpired({ delete_at: in60s }, now.getTime())).toBe(false);
    expect(isExpired({}, now.getTime())).toBe(false);
  });

  it('normaliseUrl prepends mongodb:// like Go', () => {
    expect(normaliseUrl('localhost:27017')).toBe('mongodb://localhost:27017');
    expect(normaliseUrl('mongodb://h')).toBe('mongodb://h');
    expect(normaliseUrl('mongodb+srv://u:p@c.example.net/')).toBe('mongodb+srv://u:p@c.example.net/');
  });

  it('resultsToBson keeps a string [] byte value as binary, never as json', () => {
    expect(resultsToBson([{ Type: '[]uint8', Value: 'e30=' }])).toStrictEqual([{ type: '[]uint8', value: new Binary(Buffer.from('{}')) }]);
  });
});

describe('MongoBackend without a server', () => {
  it('connects lazily, rejects (never "no state") when the server is unreachable, closes idempotently', async () => {
    const b = new MongoBackend({ url: 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200' });
    expect(b.capabilities).toStrictEqual({ waitForState: false, mayEvict: false });
    await expect(b.getState(uuid)).rejects.toThrow();
    await b.close();
    await b.close();
    await expect(b.getState(uuid)).rejects.toThrow(/closed/);
  });

  it('leaves a caller-owned client open', async () => {
    const client = new MongoClient('mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200');
    const spy = vi.spyOn(client, 'close');
    const b = new MongoBackend({ client, database: 'x' });
    expect(b.client).toBe(client);
    await b.close();
    expect(spy).not.toHaveBeenCalled();
    await client.close();
  });
});
