// LightCap: placeholder until the first component lands.
