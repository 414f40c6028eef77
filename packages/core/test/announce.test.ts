import { describe, expect, it } from 'vitest';
import { ANNOUNCE_HEADER, announcedOn, withAnnounceTarget } from '../src/announce.js';
import { MemoryBackend } from '../src/memory/memory-backend.js';
import { MemoryBroker } from '../src/memory/memory-broker.js';
import { newSignature, type Signature } from '../src/message/signature.js';
import { Server } from '../src/server.js';

describe('announce targets', () => {
  it('stamps a signature and its callbacks without touching the caller’s objects, keeping a header already set', () => {
    const inner = newSignature({ Name: 'cb2' });
    const original = newSignature({
      Name: 'first',
      Headers: { trace: 'x' },
      OnSuccess: [newSignature({ Name: 'cb', OnSuccess: [inner] })],
      OnError: [newSignature({ Name: 'err', Headers: { [ANNOUNCE_HEADER]: 'theirs' } })],
      ChordCallback: newSignature({ Name: 'chord' }),
    });
    const before = JSON.stringify(original);
    const stamped = withAnnounceTarget(original, 'mine');
    expect(JSON.stringify(original)).toBe(before);
    expect(stamped.Headers).toEqual({ trace: 'x', [ANNOUNCE_HEADER]: 'mine' });
    expect(announcedOn(stamped.OnSuccess?.[0] as Signature)).toBe('mine');
    expect(announcedOn(stamped.OnSuccess?.[0]?.OnSuccess?.[0] as Signature)).toBe('mine');
    expect(announcedOn(stamped.OnError?.[0] as Signature)).toBe('theirs');
    expect(announcedOn(stamped.ChordCallback as Signature)).toBe('mine');
    expect(announcedOn(newSignature({ Name: 'n', Headers: { [ANNOUNCE_HEADER]: 5 } }))).toBeUndefined();
  });

  it('Server stamps what it sends only while the backend names a target, and the result knows it', async () => {
    let target: string | undefined;
    class Announcing extends MemoryBackend {
      announceTo(): string | undefined {
        return target;
      }
    }
    const broker = new MemoryBroker();
    const published: Signature[] = [];
    const publish = broker.publish.bind(broker);
    broker.publish = async (sig) => {
      published.push(sig);
      return publish(sig);
    };
    const server = new Server({ broker, backend: new Announcing() });
    const plain = await server.sendTask({ Name: 'a' });
    target = 'machinery-ts:reply:abc';
    const [stamped] = await server.sendTasks([{ Name: 'b' }]);
    expect(plain.announcedOn).toBeUndefined();
    expect(published[0]?.Headers).toEqual({});
    expect(stamped?.announcedOn).toBe(target);
    expect(published[1]?.Headers?.[ANNOUNCE_HEADER]).toBe(target);
    await server.close();
  });
});
