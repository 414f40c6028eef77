import { randomUUID } from 'node:crypto';
import { backendContract } from '@machinery-ts/contract-tests';
import { TaskStates } from '@machinery-ts/core';
import { type Document, Long, MongoClient } from 'mongodb';
import { afterAll, describe, expect, it } from 'vitest';
import { MongoBackend } from '../src/index.js';

const url = process.env.MONGODB_URL;
const database = `mts_test_${randomUUID().replace(/-/g, '').slice(0, 12)}`;

if (!url) {
  console.warn(
    'backend-mongo server tests skipped: MONGODB_URL is not set (no MongoDB server can be installed on this machine; ' +
      'set MONGODB_URL=mongodb://127.0.0.1:27017 with a local mongod or an Atlas URL to run them)',
  );
}

describe.runIf(url)('MongoBackend against a server', () => {
  const u = url as string;

  afterAll(async () => {
    const client = new MongoClient(u);
    try {
      await client.db(database).dropDatabase();
    } finally {
      await client.close();
    }
  });

  backendContract('mongo', {
    create: () => new MongoBackend({ url: u, database }),
    chordMembers: 200,
    chordRacers: 8,
  });

  it('a 200-member chord completed by 8 racing backends fires exactly once, 50 trials', async () => {
    const racers = Array.from({ length: 8 }, () => new MongoBackend({ url: u, database }));
    try {
      for (let trial = 0; trial < 50; trial++) {
        const group = `group_${randomUUID()}`;
        const members = Array.from({ length: 200 }, () => `task_${randomUUID()}`);
        await (racers[0] as MongoBackend).initGroup(group, members);
        let fired = 0;
        await Promise.all(
          members.map(async (id, i) => {
            const b = racers[i % racers.length] as MongoBackend;
            await b.setState({ taskUUID: id, taskName: 'm', state: TaskStates.SUCCESS, results: [{ Type: 'int64', Value: i }] });
            if ((await b.triggerChord(group, { when: 'complete', count: 200 })).fired) fired += 1;
          }),
        );
        expect(fired, `trial ${trial}`).toBe(1);
      }
    } finally {
      await Promise.all(racers.map((b) => b.close()));
    }
  });

  it('creates the TTL indexes, writes Go\'s documents, and hides expired states', async () => {
    const b = new MongoBackend({ url: u, database, resultsExpireIn: 1 });
    const client = new MongoClient(u);
    try {
      const id = `task_${randomUUID()}`;
      await b.setState({ taskUUID: id, taskName: 'add', state: TaskStates.PENDING });
      await b.setState({ taskUUID: id, taskName: '', state: TaskStates.STARTED });
      await b.setState({ taskUUID: id, taskName: '', state: TaskStates.SUCCESS, results: [{ Type: 'int64', Value: 2 }] });
      const db = client.db(database);
      for (const name of ['tasks', 'group_metas']) {
        const indexes = await db.collection(name).listIndexes().toArray();
        expect(indexes.find((i) => i.key?.delete_at === 1)).toMatchObject({ expireAfterSeconds: 0 });
      }
      const raw = await db.collection<Document & { _id: string }>('tasks').findOne({ _id: id }, { promoteLongs: false });
      expect(raw).toMatchObject({ _id: id, state: 'SUCCESS', task_name: 'add', results: [{ type: 'int64', value: Long.fromNumber(2) }] });
      expect(raw?.created_at).toBeInstanceOf(Date);
      expect(raw?.delete_at).toBeInstanceOf(Date);
      expect((await b.getState(id))?.State).toBe('SUCCESS');
      await new Promise((r) => setTimeout(r, 1200));
      // The TTL monitor runs once a minute; until it does, an expired document reads as null.
      expect(await b.getState(id)).toBeNull();
    } finally {
      await b.close();
      await client.close();
    }
  });
});
