// LightCapEval: placeholder until the first component lands.
