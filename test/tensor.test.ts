import t from 'tap';
import { Tensor } from '../lib/tensor.js';
import { InvalidArgumentError } from '../lib/errors.js';

t.test('Tensor checks data length against shape', async (t) => {
  const x = new Tensor('float32', [2, 3], new Float32Array(6));
  t.same(x.shape, [2, 3]);
  t.throws(() => new Tensor('float32', [2, 2], new Float32Array(6)), InvalidArgumentError);
  t.throws(() => new Tensor('int64', [2], new Float32Array(2) as never), InvalidArgumentError);
});
