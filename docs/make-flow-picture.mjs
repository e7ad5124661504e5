// Renders docs/flow-rotation.png: a known synthetic flow, a rotation about the picture's centre
// (u, v) = (-(y - c), x - c) in image coordinates (v down), drawn by the library's Middlebury colour
// coding. Every direction appears once around the centre, saturation growing with the radius, so
// the picture is the colour key for every flow picture the library writes.
//
//   npm run build:ts && node docs/make-flow-picture.mjs
import { writeFlowPicture } from '../dist/lib/index.js';

const size = 160;
const c = (size - 1) / 2;
const flow = new Float32Array(size * size * 2);
for (let y = 0; y < size; y++) {
  for (let x = 0; x < size; x++) {
    flow[(y * size + x) * 2] = -(y - c);
    flow[(y * size + x) * 2 + 1] = x - c;
  }
}
await writeFlowPicture(new URL('./flow-rotation.png', import.meta.url).pathname, { flow, width: size, height: size });
