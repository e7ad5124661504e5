/** AutoModel: picks the head class named by config.architectures, as transformers' Auto classes do. */
import { PerceiverConfig } from './config.js';
import { ConfigError, InvalidArgumentError } from './errors.js';
import { openCheckpointWeights } from './io/checkpoint.js';
import {
  PerceiverForImageClassificationConvProcessing,
  PerceiverForImageClassificationFourier,
  PerceiverForImageClassificationLearned,
  PerceiverForMaskedLM,
  PerceiverForMultimodalAutoencoding,
  PerceiverForOpticalFlow,
  PerceiverForSequenceClassification,
} from './modeling/heads.js';
import { checkLoadOptions, checkpointFolder, type LoadOptions, type Logits, type PerceiverModel } from './modeling/perceiver_model.js';
import { WeightStore } from './modeling/weights.js';

type AnyHead = new (config: PerceiverConfig) => PerceiverModel<Logits>;

export const ARCHITECTURES: Record<string, AnyHead> = {
  PerceiverForMaskedLM,
  PerceiverForSequenceClassification,
  PerceiverForImageClassificationLearned,
  PerceiverForImageClassificationFourier,
  PerceiverForImageClassificationConvProcessing,
  PerceiverForOpticalFlow,
  PerceiverForMultimodalAutoencoding,
};

export class AutoModel {
  /**
   * Loads a checkpoint folder (config.json + model.safetensors, pytorch_model.bin or a sharded
   * index), or a Hugging Face Hub id downloaded into the standard cache, into its head class.
   */
  static async fromPretrained(dir: string, options: LoadOptions = {}): Promise<PerceiverModel<Logits>> {
    options = checkLoadOptions(options);
    const folder = await checkpointFolder(dir, options.hub);
    const config = await PerceiverConfig.fromPretrained(folder);
    const Head = AutoModel.headFor(config);
    // The engine reads each weight from the open files while it loads (no second copy in memory).
    const checkpoint = await openCheckpointWeights(folder);
    try {
      return await new Head(config).loadWeights(new WeightStore(checkpoint.tensors), options);
    } finally {
      await checkpoint.close();
    }
  }

  /** The head class for a config, or a ConfigError saying which architectures are supported. */
  static headFor(config: PerceiverConfig): AnyHead {
    if (!(config instanceof PerceiverConfig)) throw new InvalidArgumentError('config', 'a PerceiverConfig', config);
    const supported = Object.keys(ARCHITECTURES).join(', ');
    const name = config.architectures?.[0];
    if (!name) throw new ConfigError(`config.architectures is missing, so the head cannot be chosen (supported: ${supported})`);
    const Head = Object.hasOwn(ARCHITECTURES, name) ? ARCHITECTURES[name] : undefined;
    if (!Head) throw new ConfigError(`unsupported architecture "${name}" in config.architectures (supported: ${supported})`);
    return Head;
  }
}
