import { describe, expect, it } from 'vitest';
import {
  MalformedMessageError,
  ReflectArgsError,
  arg,
  decodeSignature,
  decodeTaskState,
  encodeSignature,
  encodeTaskState,
  fromWire,
  newSignature,
  newTaskUUID,
  resultsFromWire,
  toWire,
  type Signature,
  type TaskState,
  type WireValue,
} from '../src/index.js';

const GO_ADD =
  '{"UUID":"task_64ef830e-3820-4cf7-9562-b746c5ec23f1","Name":"add","RoutingKey":"machinery_tasks","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":[{"Name":"","Type":"int64","Value":1},{"Name":"","Type":"int64","Value":1}],"Headers":{},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}';
const GO_SUCCESS =
  '{"TaskUUID":"task_64ef830e-3820-4cf7-9562-b746c5ec23f1","TaskName":"add","State":"SUCCESS","Results":[{"Type":"int64","Value":2}],"Error":"","CreatedAt":"2026-11-22T20:18:13.156749485Z","TTL":0}';


/**
 * Each text decodes the same as its copy with `keys` lower-cased: lower-case keys make the
 * quick path decline (Go's decoder accepts them), so the key-folding reader reads the copy.
 */
function expectQuickPathAgrees<T>(texts: readonly string[], keys: RegExp, decode: (text: string) => T): void {
  for (const text of texts) {
    const folded = text.replace(keys, (_m, k: string) => `"${k.toLowerCase()}":`);
    expect(folded).not.toBe(text);
    expect(decode(text)).toStrictEqual(decode(folded));
  }
}
describe('the task message (reference §1, §13)', () => {
  it("encodes add(1, 1) to Go's exact bytes", () => {
    const sig = newSignature({
      UUID: 'task_64ef830e-3820-4cf7-9562-b746c5ec23f1',
      Name: 'add',
      RoutingKey: 'machinery_tasks',
      Args: [arg('int64', 1n), arg('int64', 1n)],
    });
    expect(encodeSignature(sig)).toBe(GO_ADD);
  });

  it("produces Go's SUCCESS document byte for byte", () => {
    expect(
      encodeTaskState({
        TaskUUID: 'task_64ef830e-3820-4cf7-9562-b746c5ec23f1',
        TaskName: 'add',
        State: 'SUCCESS',
        Results: [{ Type: 'int64', Value: 2 }],
        Error: '',
        CreatedAt: '2026-11-22T20:18:13.156749485Z',
        TTL: 0,
      }),
    ).toBe(GO_SUCCESS);
    expect(encodeTaskState(decodeTaskState(GO_SUCCESS))).toBe(GO_SUCCESS);
  });

  it('round-trips int64 2^53+1, uint64 max, []byte, []string and 1e+21 exactly', () => {
    const args =
      '[{"Name":"","Type":"int64","Value":9007199254740993},{"Name":"","Type":"uint64","Value":18446744073709551615},' +
      '{"Name":"","Type":"[]byte","Value":"aGk="},{"Name":"","Type":"[]string","Value":["a","b"]},{"Name":"","Type":"float64","Value":1e+21}]';
    const text = GO_ADD.replace(/"Args":\[.*?\],"Headers"/, `"Args":${args},"Headers"`);
    const sig = decodeSignature(text);
    expect(encodeSignature(sig)).toBe(text);
    const values = (sig.Args ?? []).map((a) => fromWire(a.Type, a.Value));
    expect(values[0]).toBe(9007199254740993n);
    expect(values[1]).toBe(18446744073709551615n);
    expect(Buffer.from(values[2] as Uint8Array).toString()).toBe('hi');
    expect(values[3]).toEqual(['a', 'b']);
    expect(values[4]).toBe(1e21);
  });

  it('decodes leniently: case-insensitive keys, unknown keys ignored, missing keys zero', () => {
    const sig = decodeSignature('{"uuid":"task_x","NAME":"add","extra":1}');
    expect(sig).toMatchObject({ UUID: 'task_x', Name: 'add', Args: null, Headers: null, RetryCount: 0, ETA: null });
  });

  it('rejects values that do not fit their Go field, like Go', () => {
    expect(() => decodeSignature('{"Name":"a","Priority":300}')).toThrow(/Priority 300 does not fit uint8/);
    expect(() => decodeSignature('{"Name":"a","ETA":1704110400}')).toThrow(MalformedMessageError);
    expect(() => decodeSignature('{"Name":"a","RetryCount":"3"}')).toThrow(/RetryCount must be an integer/);
    expect(() => decodeSignature('not json')).toThrow(/invalid JSON/);
    expect(() => decodeSignature('[1,2]')).toThrow(/must be a JSON object/);
  });

  it('refuses __proto__ / constructor keys but not the words inside strings', () => {
    expect(() => decodeSignature('{"Name":"a","Headers":{"__proto__":{"x":1}}}')).toThrow(/forbidden key "__proto__"/);
    expect(() => decodeSignature('{"Name":"a","Args":[{"Type":"string","Value":{"constructor":1}}]}')).toThrow(/forbidden key/);
    expect(decodeSignature('{"Name":"\\"__proto__\\": x"}').Name).toBe('"__proto__": x');
  });

  it('refuses a prototype key, and forbidden keys in objects nested in arrays of arrays', () => {
    expect(() => decodeSignature('{"Name":"a","Headers":{"h":{"prototype":1}}}')).toThrow(/forbidden key "prototype"/);
    expect(() => decodeSignature('{"Name":"a","Headers":{"h":[[1,{"ok":[{"__proto__":null}]}]]}}')).toThrow(/forbidden key "__proto__"/);
    expect(() => decodeTaskState('{"TaskUUID":"t","State":"SUCCESS","Results":[{"Type":"string","Value":{"constructor":{}}}]}')).toThrow(/forbidden key "constructor"/);
  });

  it('an enumerable key added to Object.prototype is neither refused nor walked', () => {
    // Walked as if it were the message's own, its value would be refused (and it is reachable from itself).
    Object.defineProperty(Object.prototype, 'polluted', { value: { prototype: 1 }, enumerable: true, configurable: true, writable: true });
    try {
      expect(decodeSignature('{"Name":"a","Headers":{"h":{"x":1}}}').Headers).toEqual({ h: { x: 1 } });
      expect(decodeTaskState('{"TaskUUID":"t","State":"SUCCESS","Results":[{"Type":"int64","Value":9007199254740993}]}').Results?.[0]?.Value).toBe(
        9007199254740993n,
      );
    } finally {
      delete (Object.prototype as Record<string, unknown>).polluted;
    }
  });

  it('a message as Go writes it decodes the same by the quick path as by the key-folding reader', () => {
    const texts = [
      GO_ADD,
      GO_ADD.replace('"ETA":null', '"ETA":"2026-11-22T20:18:13.156749485Z"').replace('"Priority":0', '"Priority":255'),
      GO_ADD.replace(/"Args":\[.*?\]/, '"Args":null').replace('"Headers":{}', '"Headers":null'),
      GO_ADD.replace('"Value":1}', '"Value":null}').replace('"Headers":{}', '"Headers":{"trace":"x","n":2}'),
      GO_ADD.replace('"Value":1}', '"Value":18446744073709551615}').replace('"Value":1}', '"Value":[1,"a",true]}'),
    ];
    expectQuickPathAgrees(texts, /"(UUID|Name|RoutingKey|Args|Priority|Value)":/g, decodeSignature);
    expect(decodeSignature(texts[4] as string).Args?.[0]?.Value).toBe(18446744073709551615n);
    // Shapes the quick path declines still decode, or are refused, as before.
    expect(decodeSignature(GO_ADD.replace('"OnSuccess":null', '"OnSuccess":[]')).OnSuccess).toEqual([]);
    expect(() => decodeSignature(GO_ADD.replace('"Priority":0', '"Priority":256'))).toThrow(/does not fit uint8/);
    expect(() => decodeSignature(GO_ADD.replace('"ETA":null', '"ETA":"soon"'))).toThrow(/RFC 3339/);
  });

  it('a state document as Go writes it decodes the same by the quick path as by the key-folding reader', () => {
    const texts = [
      GO_SUCCESS,
      GO_SUCCESS.replace('"Results":[{"Type":"int64","Value":2}]', '"Results":null').replace('"State":"SUCCESS"', '"State":"PENDING"'),
      GO_SUCCESS.replace('"Results":[{"Type":"int64","Value":2}]', '"Results":[]').replace('"Error":""', '"Error":"boom"').replace('"State":"SUCCESS"', '"State":"FAILURE"'),
      GO_SUCCESS.replace('"Value":2}', '"Value":18446744073709551615},{"Type":"[]string","Value":["a",null]},{"Type":"bool","Value":null}'),
      GO_SUCCESS.replace('"CreatedAt":"2026-11-22T20:18:13.156749485Z"', '"CreatedAt":"2026-11-22T21:18:13+01:00"').replace('"TTL":0', '"TTL":3600'),
    ];
    expectQuickPathAgrees(texts, /"(TaskUUID|State|Results|Type|TTL)":/g, decodeTaskState);
    expect(decodeTaskState(texts[3] as string).Results?.[0]?.Value).toBe(18446744073709551615n);
    // Shapes the quick path declines still decode, or are refused, as before.
    expect(decodeTaskState(GO_SUCCESS.replace('"State":"SUCCESS"', '"State":""')).State).toBe('PENDING');
    expect(decodeTaskState(GO_SUCCESS.replace(',"CreatedAt":"2026-11-22T20:18:13.156749485Z"', '')).CreatedAt).toBe('0001-01-01T00:00:00Z');
    expect(decodeTaskState(GO_SUCCESS.replace('{"Type":"int64","Value":2}', '{"Type":"int64"}')).Results).toEqual([{ Type: 'int64', Value: null }]);
    expect(() => decodeTaskState(GO_SUCCESS.replace('"TTL":0', '"TTL":0.5'))).toThrow(/TTL must be an integer/);
    expect(() => decodeTaskState(GO_SUCCESS.replace('"CreatedAt":"2026', '"CreatedAt":"soon'))).toThrow(/RFC 3339/);
    expect(() => decodeTaskState(GO_SUCCESS.replace('[{"Type":"int64","Value":2}]', '[2]'))).toThrow(/must be a JSON object/);
  });

  it('refuses a state that is only a name on Object.prototype', () => {
    for (const state of ['toString', 'constructor', 'hasOwnProperty']) {
      expect(() => decodeTaskState(GO_SUCCESS.replace('"State":"SUCCESS"', `"State":"${state}"`))).toThrow(`unknown task state "${state}"`);
    }
  });

  it('refuses a forbidden key also in a message with a number beyond 2^53, and keeps such numbers exact', () => {
    expect(() => decodeSignature('{"Name":"a","RetryCount":9007199254740993,"Headers":{"__proto__":{"x":1}}}')).toThrow(/forbidden key "__proto__"/);
    expect(decodeSignature('{"Name":"a","Args":[{"Type":"int64","Value":-9007199254740993}]}').Args?.[0]?.Value).toBe(-9007199254740993n);
    // Nesting JSON.parse accepts does not overflow the stack of the key check.
    const deep = `{"Name":"a","Headers":{"h":${'['.repeat(20000)}${']'.repeat(20000)}}}`;
    expect(decodeSignature(deep).Name).toBe('a');
  });

  it('gives new ids Go\'s shape', () => {
    expect(newTaskUUID()).toMatch(/^task_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe('the template encoders give what JSON.stringify gives, for every shape', () => {
  /** The straightforward encoding, in Go's field order: what the template must match byte for byte. */
  const reference = (sig: Signature): string =>
    JSON.stringify(
      {
        UUID: sig.UUID,
        Name: sig.Name,
        RoutingKey: sig.RoutingKey,
        ETA: sig.ETA,
        GroupUUID: sig.GroupUUID,
        GroupTaskCount: sig.GroupTaskCount,
        Args: sig.Args ? sig.Args.map((a) => ({ Name: a.Name, Type: a.Type, Value: a.Value })) : null,
        Headers: sig.Headers,
        Priority: sig.Priority,
        Immutable: sig.Immutable,
        RetryCount: sig.RetryCount,
        RetryTimeout: sig.RetryTimeout,
        OnSuccess: sig.OnSuccess ? sig.OnSuccess.map((c) => JSON.parse(reference(c)) as unknown) : null,
        OnError: sig.OnError ? sig.OnError.map((c) => JSON.parse(reference(c)) as unknown) : null,
        ChordCallback: sig.ChordCallback ? (JSON.parse(reference(sig.ChordCallback)) as unknown) : null,
        BrokerMessageGroupId: sig.BrokerMessageGroupId,
        SQSReceiptHandle: sig.SQSReceiptHandle,
        StopTaskDeletionOnError: sig.StopTaskDeletionOnError,
        IgnoreWhenTaskNotRegistered: sig.IgnoreWhenTaskNotRegistered,
      },
      // Node 20 has no JSON.rawJSON: a bigint goes through a marked string, unquoted after.
      (_k, v: unknown) => (typeof v === 'bigint' ? `\u0000big${v.toString()}` : v),
    ).replace(/"\\u0000big(-?\d+)"/g, '$1');
  const strings = ['', 'add', 'añadir', 'say "hi"', 'back\\slash', 'tab\there', 'nl\n', '\u0000\u001f\u007f', 'emoji 🚀', 'lone \ud800 surrogate', '</script>', '\u2028'];
  const values: WireValue[] = [0, -0, 1.5, -2, 1e21, 5e-324, Number.MAX_SAFE_INTEGER, true, false, null, ...strings, [1, 2], { a: 'b' }, []];

  it.each(strings)('strings in every string field: %j', (text) => {
    const sig = newSignature({ UUID: text, Name: text, RoutingKey: text, GroupUUID: text, Args: [{ Name: text, Type: text, Value: text }], Headers: { [text]: text } });
    sig.ETA = text;
    sig.BrokerMessageGroupId = text;
    sig.SQSReceiptHandle = text;
    expect(encodeSignature(sig)).toBe(reference(sig));
    const state: TaskState = { TaskUUID: text, TaskName: text, State: 'SUCCESS', Results: [{ Type: text, Value: text }], Error: text, CreatedAt: text, TTL: 0 };
    expect(encodeTaskState(state)).toBe(JSON.stringify(state));
  });

  it.each(values.map((v) => [JSON.stringify(v), v] as const))('an argument, header and result value %s', (_name, value) => {
    const sig = newSignature({ Name: 'x', Args: [{ Name: '', Type: 'int64', Value: value }], Headers: { h: value } });
    expect(encodeSignature(sig)).toBe(reference(sig));
    const state: TaskState = { TaskUUID: 'u', TaskName: 'x', State: 'SUCCESS', Results: [{ Type: 'int64', Value: value }], Error: '', CreatedAt: 'c', TTL: 0 };
    expect(encodeTaskState(state)).toBe(JSON.stringify(state));
  });

  it('messages that differ from the one before in a single field each encode as their own', () => {
    // The encoder keeps the text of fields that repeat between messages: every field must count.
    const base = (): Signature =>
      Object.assign(newSignature({ UUID: 'task_1', Name: 'add', RoutingKey: 'q', Args: [arg('int64', 1n), arg('string', 'x')], Headers: { a: 'b' } }), { ETA: null });
    const changes: ((s: Signature) => void)[] = [
      (s) => (s.UUID = 'task_2'),
      (s) => (s.Name = 'sub'),
      (s) => (s.RoutingKey = 'r'),
      (s) => (s.ETA = '2026-01-01T00:00:00Z'),
      (s) => (s.GroupUUID = 'group_1'),
      (s) => (s.GroupTaskCount = 3),
      (s) => (s.Args = [{ Name: 'n', Type: 'int64', Value: 1 }, arg('string', 'x')]),
      (s) => (s.Args = [arg('int32', 1), arg('string', 'x')]),
      (s) => (s.Args = [arg('int64', 1n), arg('string', 'y')]),
      (s) => (s.Args = [arg('int64', 1n)]),
      (s) => (s.Headers = { a: 'c' }),
      (s) => (s.Headers = { b: 'b' }),
      (s) => (s.Headers = { a: 'b', c: 1 }),
      (s) => (s.Headers = {}),
      (s) => (s.Priority = 2),
      (s) => (s.Immutable = true),
      (s) => (s.RetryCount = 4),
      (s) => (s.RetryTimeout = 5),
      (s) => (s.BrokerMessageGroupId = 'g'),
      (s) => (s.SQSReceiptHandle = 'h'),
      (s) => (s.StopTaskDeletionOnError = true),
      (s) => (s.IgnoreWhenTaskNotRegistered = true),
    ];
    for (const change of changes) {
      const changed = base();
      change(changed);
      for (const sig of [base(), changed, base()]) expect(encodeSignature(sig), change.toString()).toBe(reference(sig));
    }
    // Arguments of several types in one message, named and not, sent again and again.
    const mixed = [arg('int64', 1n), arg('string', 'x'), arg('bool', true), { Name: 'named', Type: 'int64', Value: 2 }, { Name: '', Type: 'ty"pe', Value: null }];
    for (let round = 0; round < 3; round++) {
      const sig = newSignature({ UUID: `task_${round}`, Name: round === 1 ? 'other' : 'add', Args: mixed, Headers: round === 2 ? { a: 'b' } : { a: 'c' } });
      expect(encodeSignature(sig)).toBe(reference(sig));
    }
    const state = (): TaskState => ({ TaskUUID: 'task_1', TaskName: 'add', State: 'SUCCESS', Results: [{ Type: 'int64', Value: 2 }], Error: '', CreatedAt: 'c', TTL: 0 });
    const stateChanges: ((s: TaskState) => void)[] = [
      (s) => (s.TaskUUID = 'task_2'),
      (s) => (s.TaskName = 'sub'),
      (s) => (s.State = 'FAILURE'),
      (s) => (s.Results = [{ Type: 'string', Value: 2 }]),
      (s) => (s.Results = null),
      (s) => (s.Error = 'boom'),
      (s) => (s.CreatedAt = 'd'),
      (s) => (s.TTL = 60),
    ];
    for (const change of stateChanges) {
      const changed = state();
      change(changed);
      for (const st of [state(), changed, state()]) expect(encodeTaskState(st), change.toString()).toBe(JSON.stringify(st));
    }
  });

  it('the shapes the template leaves to the general path still encode as before', () => {
    const child = newSignature({ Name: 'child', Args: [arg('string', 'c')] });
    const shapes: Signature[] = [
      newSignature({ Name: 'big', Args: [arg('int64', 2n ** 62n), arg('uint64', 18446744073709551615n)] }),
      newSignature({ Name: 'nan', Args: [{ Name: '', Type: 'float64', Value: Number.NaN }] }),
      newSignature({ Name: 'cb', OnSuccess: [child], OnError: [child], ChordCallback: child }),
      newSignature({ Name: 'empty callbacks', OnSuccess: [], OnError: [] }),
      newSignature({ Name: 'no args', Args: null, Headers: null }),
      newSignature({ Name: 'nested header', Headers: { trace: { id: 'x', n: 2n } } }),
      Object.assign(newSignature({ Name: 'undefined ETA' }), { ETA: undefined as unknown as null }),
      Object.assign(newSignature({ Name: 'NaN count' }), { RetryCount: Number.NaN }),
      Object.assign(newSignature({ Name: 'headers with a prototype' }), { Headers: Object.assign(Object.create({ inherited: 1 }) as object, { own: 2 }) }),
    ];
    for (const sig of shapes) expect(encodeSignature(sig), sig.Name).toBe(reference(sig));
    const big: TaskState = { TaskUUID: 'u', TaskName: 'x', State: 'SUCCESS', Results: [{ Type: 'uint64', Value: 18446744073709551615n }], Error: '', CreatedAt: 'c', TTL: 0 };
    expect(encodeTaskState(big)).toBe('{"TaskUUID":"u","TaskName":"x","State":"SUCCESS","Results":[{"Type":"uint64","Value":18446744073709551615}],"Error":"","CreatedAt":"c","TTL":0}');
  });
});

describe('the Go type table (reference §1.3)', () => {
  it("uses Go's error texts for bad args", () => {
    expect(() => fromWire('map', {})).toThrow('Reflect task args error: map is not one of supported types');
    expect(() => fromWire('int64', '1')).toThrow('Reflect task args error: 1 is not int64');
    expect(() => fromWire('int64', 1.5)).toThrow(/strconv.ParseInt/);
    expect(() => fromWire('int8', 300)).toThrow(ReflectArgsError);
    expect(() => fromWire('uint64', -1)).toThrow(/overflows uint64/);
    expect(() => fromWire('[]int64', true)).toThrow(ReflectArgsError);
  });

  it('accepts what Go accepts for slices and bytes', () => {
    expect(fromWire('[]int64', null)).toEqual([]);
    expect(fromWire('[]int64', {})).toEqual([]);
    expect(fromWire('[]uint8', [104, 105])).toEqual(new Uint8Array([104, 105]));
    expect(fromWire('float32', 0.1)).toBe(Math.fround(0.1));
  });

  it('refuses producer values a Go worker would choke on', () => {
    expect(() => toWire('int64', 1.5)).toThrow(ReflectArgsError);
    expect(() => toWire('int64', 2 ** 60)).toThrow(ReflectArgsError);
    expect(() => toWire('[]int64', true)).toThrow(ReflectArgsError);
    expect(toWire('[]byte', new Uint8Array([104, 105]))).toBe('aGk=');
    expect(toWire('uint64', 18446744073709551615n)).toBe(18446744073709551615n);
  });

  it('reads results, keeping unknown Go types as opaque JSON', () => {
    expect(resultsFromWire([{ Type: 'int64', Value: 2 }, { Type: 'main.Foo', Value: { a: 1 } }])).toEqual([2n, { a: 1 }]);
  });
});

describe('Server.sendTask', () => {
  it('fills every Go field of a partial signature, whatever fields it carries', async () => {
    const { Server, MemoryBroker } = await import('../src/index.js');
    const broker = new MemoryBroker();
    const server = new Server({ broker });
    await server.sendTask({ Name: 'x', Headers: { a: 'b' }, OnSuccess: null });
    const body = broker.transport.pending('machinery_tasks')[0] as string;
    expect(Object.keys(JSON.parse(body) as object)).toEqual([
      'UUID', 'Name', 'RoutingKey', 'ETA', 'GroupUUID', 'GroupTaskCount', 'Args', 'Headers', 'Priority', 'Immutable',
      'RetryCount', 'RetryTimeout', 'OnSuccess', 'OnError', 'ChordCallback', 'BrokerMessageGroupId', 'SQSReceiptHandle',
      'StopTaskDeletionOnError', 'IgnoreWhenTaskNotRegistered',
    ]);
    await server.close();
  });
});
