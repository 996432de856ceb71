// Runs face-api.js itself (the npm package's bundled tfjs, CPU backend) on raw 112x112 RGB
// images, as the ground truth the rebuilt ONNX graphs are checked against by `models/build.sh`.
//
//   node face_api_reference.mjs FACE_API_PACKAGE_DIR IMAGES.u8 COUNT OUT.json
//
// IMAGES.u8: COUNT images, each 112*112*3 bytes, row-major RGB.
// OUT.json: {"landmarks": [[136 floats], ...], "expressions": [[7 probabilities], ...]}
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [packageDir, imagesPath, countText, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node face_api_reference.mjs FACE_API_PACKAGE_DIR IMAGES.u8 COUNT OUT.json');
  process.exit(2);
}
// The ESM bundle's Node platform needs `util` from a bundler; presenting a minimal browser global
// selects its browser platform instead (TextEncoder and fetch exist in Node >= 18).
globalThis.window = globalThis;
globalThis.document = { createElement: () => ({}) };
const faceapi = await import(pathToFileURL(path.join(packageDir, 'dist', 'face-api.esm.js')).href);
const tf = faceapi.tf;
await tf.setBackend('cpu');

async function loadNet(net, name) {
  const dir = path.join(packageDir, 'model');
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, `${name}-weights_manifest.json`)));
  const specs = manifest.flatMap((group) => group.weights);
  const bytes = Buffer.concat(manifest.flatMap((group) => group.paths.map((p) => fs.readFileSync(path.join(dir, p)))));
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  net.loadFromWeightMap(tf.io.decodeWeights(buffer, specs));
  return net;
}

const landmarkNet = await loadNet(new faceapi.FaceLandmark68Net(), 'face_landmark_68_model');
const expressionNet = await loadNet(new faceapi.FaceExpressionNet(), 'face_expression_model');

const count = Number(countText);
const side = 112;
const raw = fs.readFileSync(imagesPath);
if (raw.length !== count * side * side * 3) {
  console.error(`${imagesPath}: expected ${count * side * side * 3} bytes, found ${raw.length}`);
  process.exit(2);
}
const out = { landmarks: [], expressions: [] };
for (let i = 0; i < count; i += 1) {
  const pixels = raw.subarray(i * side * side * 3, (i + 1) * side * side * 3);
  const image = tf.tensor3d(Float32Array.from(pixels), [side, side, 3], 'float32');
  const landmarks = await landmarkNet.forward(image);
  out.landmarks.push(Array.from(await landmarks.data()));
  const expressions = await expressionNet.forward(image);
  out.expressions.push(Array.from(await expressions.data()));
  tf.dispose([image, landmarks, expressions]);
}
fs.writeFileSync(outPath, JSON.stringify(out));
