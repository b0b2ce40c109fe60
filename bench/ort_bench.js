// ONNX Runtime (onnxruntime-node from the npm registry) on the same ONNX file: slices per second, same input shape.
//   node bench/ort_bench.js MODEL.onnx SLICES THREADS BATCH   → one JSON line
const ort = require('onnxruntime-node');

async function main() {
  const [model, slices, threads, batch] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5]];
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const side = 224;
  const make = (n) => {
    const data = new Float32Array(n * 3 * side * side);
    for (let i = 0; i < data.length; ++i) data[i] = Math.floor(Math.random() * 256);
    return new ort.Tensor('float32', data, [n, 3, side, side]);
  };
  await session.run({input: make(batch)});  // warm-up
  const t0 = process.hrtime.bigint();
  let done = 0;
  while (done < slices) {
    const n = Math.min(batch, slices - done);
    await session.run({input: make(n)});
    done += n;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({bench: 'onnxruntime', slices, threads, batch, seconds: secs, slices_per_s: slices / secs,
                              version: require('onnxruntime-node/package.json').version}));
}
main();
