// LightCapCore: placeholder until the first component lands.
