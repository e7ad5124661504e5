/**
 * A real S3-compatible server for tests: s3rver (npm) on 127.0.0.1, a free port, its own temporary
 * folder; stopped and removed at the test's end. Clients sign with s3rver's fixed credentials,
 * given through the environment as the AWS SDK's standard credential chain reads them.
 */
import type { Test } from 'tap';
import { S3Client, PutObjectCommand, CreateBucketCommand } from '@aws-sdk/client-s3';
import { tempDir } from './fixtures.js';

export interface TestS3 {
  endpoint: string;
  client: S3Client;
  put(bucket: string, key: string, body: Uint8Array | string): Promise<void>;
  createBucket(bucket: string): Promise<void>;
}

export async function startS3(t: Test): Promise<TestS3> {
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  process.env.AWS_REGION = 'us-east-1';
  // s3rver has no type declarations: the module name goes through a variable.
  const name = 's3rver';
  const { default: S3rver } = (await import(name)) as unknown as { default: new (options: object) => { run(): Promise<{ port: number }>; close(): Promise<void> } };
  const directory = await tempDir(t, 'perceiver-s3-');
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({ endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  t.teardown(async () => {
    client.destroy();
    await server.close();
  });
  return {
    endpoint,
    client,
    async createBucket(bucket) {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
    },
    async put(bucket, key, body) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    },
  };
}
