pub fn _d(){}
